"""The benchmark's measurements measure what they say."""

import platform
import subprocess
import sys
import textwrap

from lookupvit.benchmark import map_freed_memory_back

# A fresh interpreter, so the allocator setting cannot leak into the test process. Frees every
# other 8 MiB block: with glibc's defaults the holes stay resident (0 MiB released here).
FRAGMENTED_FREES = textwrap.dedent(
    """
    import torch
    from lookupvit.benchmark import _status_bytes, map_freed_memory_back

    assert map_freed_memory_back()
    torch.ones(2 * 2**20)  # by default, freeing a mapped block raises glibc's threshold past its size
    blocks = [torch.ones(2 * 2**20) for _ in range(24)]  # 24 x 8 MiB, touched
    held = _status_bytes("VmRSS")
    del blocks[::2]
    print((held - _status_bytes("VmRSS")) / 2**20)
    """
)


def test_freed_memory_leaves_the_rss_at_once():
    if platform.libc_ver()[0] != "glibc":
        assert not map_freed_memory_back()  # no mallopt: the bench prints n/a for the tensors column
        return
    released_mib = float(subprocess.run([sys.executable, "-c", FRAGMENTED_FREES], capture_output=True, text=True, check=True).stdout)
    assert released_mib > 0.9 * 12 * 8  # the 12 freed blocks, though live blocks sit between them
