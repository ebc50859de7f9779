"""LOCE's model parts, registered in MMDetection's MODELS registry on import."""
from .equilibrium_loss import EquilibriumLoss, equilibrium_loss
from .loce_roi_head import LOCERoIHead
from .mean_score import ClassPrior, MeanScore, build_indicator
from .mfs import FeatureMemory, jitter_boxes, sample_classes

__all__ = ['EquilibriumLoss', 'equilibrium_loss', 'LOCERoIHead', 'ClassPrior', 'MeanScore',
           'build_indicator', 'FeatureMemory', 'jitter_boxes', 'sample_classes']
