"""The one schema of a composed config and the one check of it, before any work or run dir: every key
with its type and range (schema.py, in the vocabulary of schema_types.py), then the rules that span
groups (checks.py). The schema reads its choices from the modules that use them, so it sits above them.

May import: relvit.errors, relvit.runs, relvit.backbones, relvit.data, relvit.probes, relvit.model
"""
