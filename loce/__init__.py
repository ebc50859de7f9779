"""LOCE (ICCV 2021) as an MMDetection 3 plug-in.

Importing the package registers every module in MMDetection's registries, so a config needs only
``custom_imports = dict(imports=['loce'], allow_failed_imports=False)``; it also lets torch load
mmengine checkpoints weights-only (loce/checkpoint.py), so MMDetection's tools read them as
they are.
"""
from . import engine, evaluation, models  # noqa: F401
from .checkpoint import register_safe_globals

register_safe_globals()
