"""The LOCE reproduction workflow."""
import warnings

# setuptools warns on every import of pkg_resources (mmengine's config loader uses it). That one
# known third-party warning is silenced for every entry point of the workflow (the CLI, the
# Snakefile) so that real warnings stand out.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
