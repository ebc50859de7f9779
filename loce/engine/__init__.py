"""LOCE's training hooks, registered in MMDetection's HOOKS registry on import."""
from .freeze_hook import FreezeRepresentationHook, freeze_except
from .memory_warmup_hook import MemoryWarmupHook, class_balanced_indices, class_instance_counts
from .class_statistics_hook import ClassStatisticsHook, class_image_counts

__all__ = ['FreezeRepresentationHook', 'freeze_except', 'MemoryWarmupHook',
           'class_balanced_indices', 'class_instance_counts']
__all__ += ['ClassStatisticsHook', 'class_image_counts']
