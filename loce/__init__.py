"""LOCE (ICCV 2021) as an MMDetection 3 plug-in.

Importing the package registers every module in MMDetection's registries, so a config needs only
``custom_imports = dict(imports=['loce'], allow_failed_imports=False)``.
"""
from . import engine, evaluation, models  # noqa: F401
