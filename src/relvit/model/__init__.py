"""What trains: the Lightning module shared by every task, its heads, the task spec, the pretext targets
(ssl/), the learning-rate schedules, and the choices that follow the hardware (precision, fused
optimiser, gradient clipping, compilation). It is handed a built backbone; it knows no data or files.

May import: relvit.errors, relvit.backbones, relvit.probes
"""
