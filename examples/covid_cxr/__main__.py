"""``python -m examples.covid_cxr <step> ...``: see :mod:`examples.covid_cxr.cli`."""

import sys

from examples.covid_cxr.cli import main

if __name__ == "__main__":
    sys.exit(main())
