"""Evaluation: fast LVIS AP (registered as ``FastLVISMetric``) and GT-box classification stats."""
from .classification_stats import gt_classification_stats
from .fast_lvis_metric import AP_KEYS, FastLVISMetric, evaluate_lvis, predictions_to_lvis
from .lvis_inputs import (annotated_categories, cap_detections_per_image, evaluated_detections,
                          load_lvis_gt)

__all__ = [
    'AP_KEYS', 'FastLVISMetric', 'annotated_categories', 'cap_detections_per_image',
    'evaluate_lvis', 'evaluated_detections', 'gt_classification_stats', 'load_lvis_gt',
    'predictions_to_lvis'
]
