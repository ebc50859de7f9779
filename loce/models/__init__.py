"""LOCE's model parts, registered in MMDetection's MODELS registry on import."""
from .equilibrium_loss import EquilibriumLoss, equilibrium_loss
from .loce_roi_head import LOCERoIHead
from .indicator import ClassPrior, MeanScore, build_indicator
from .mfs import FeatureMemory, jitter_boxes, sample_classes
from .balanced_softmax_loss import BalancedSoftmaxLoss
from .ecm_loss import EffectiveClassMarginLoss
from .eql_loss import EqualizationLoss
from .eqlv2_loss import EqualizationLossV2
from .group_softmax_loss import GroupSoftmaxLoss

__all__ = ['EquilibriumLoss', 'equilibrium_loss', 'LOCERoIHead', 'ClassPrior', 'MeanScore',
           'build_indicator', 'FeatureMemory', 'jitter_boxes', 'sample_classes']
__all__ += ['BalancedSoftmaxLoss', 'EffectiveClassMarginLoss', 'EqualizationLoss',
            'EqualizationLossV2', 'GroupSoftmaxLoss']
