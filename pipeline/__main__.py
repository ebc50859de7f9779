"""`python -m pipeline STAGE ...` (the commands are in pipeline/cli.py). A stage that computes
with torch goes to the scale's fork server when one is running (pipeline/forkserver.py), whose
child runs it through cli.main with torch already imported; otherwise it runs here."""
import sys

from . import cli, forkserver


def main(argv=None) -> int:
    return cli.main(argv, delegate=forkserver.call)


if __name__ == '__main__':
    sys.exit(main())
