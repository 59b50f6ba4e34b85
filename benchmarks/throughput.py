"""Throughput benchmark: images/s of LookupViT vs ViT with speedup next to the FLOPs ratio.

Same as `lookupvit bench`; run `python benchmarks/throughput.py --help` for the options.
"""

import sys

from lookupvit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
