"""The RelViT pretext tasks: targets, heads and losses over the patch-token grid."""
from relvit.model.ssl.targets import (
    NUM_RELATIONS,
    RELATION_CLASSES,
    angle_targets,
    distance_targets,
    grid_coordinates,
    position_targets,
    relation_targets,
)

__all__ = [
    "NUM_RELATIONS",
    "RELATION_CLASSES",
    "angle_targets",
    "distance_targets",
    "grid_coordinates",
    "position_targets",
    "relation_targets",
]
