"""Where a run's files live and how its process behaves: the run dir and its atomic files, checkpoints
read without executing code and written atomically, warm starts (with resampled weights), configs stored
in checkpoints and what they may build, the guards of a run (finite loss, signals, random state), its
console and trackers, its ranks under DDP.

May import: relvit.errors
"""
