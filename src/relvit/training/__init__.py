"""One training run from a checked config: build the data, backbone and module, fit, judge the best
checkpoint, report (run.py); and the plan of every device-dependent path of a run (device_plan.py).

May import: relvit.errors, relvit.runs, relvit.data, relvit.model, relvit.config
"""
