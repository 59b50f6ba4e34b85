"""timm's feature API for LookupViT: the lookup tokens after chosen blocks (forward_intermediates, features_only).

Lookup tokens, not compressed ones: they keep the patch grid whatever the compressed grid of the
call, so every block's feature map has one shape, (B, D, H/p, W/p), as a detection or segmentation
neck expects. Kept apart from the model file so the block and the model read top to bottom there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:  # the model module imports this one
    from .lookupvit import LookupViTOutput

BlockIndices = int | list[int] | tuple[int, ...]  # timm's: the last n blocks, or these (negative from the end)


def block_indices(depth: int, indices: BlockIndices | None) -> list[int]:
    """timm's convention for which blocks to take: None all, an int n the last n, a sequence those (negative from the end)."""
    if indices is None:
        indices = depth
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"the last {indices} blocks: choose between 1 and {depth}")
        return list(range(depth - indices, depth))
    taken = [depth + index if index < 0 else index for index in indices]
    if not taken or not all(0 <= index < depth for index in taken):
        raise ValueError(f"block indices {list(indices)} must be non-empty and in [-{depth}, {depth - 1}]")
    return taken



class LookupIntermediates:
    """Mixed into LookupViT; uses its embed_tokens, run_lookupvit_block and finish."""

    @property
    def feature_info(self) -> list[dict]:
        """What forward_intermediates returns per block: the lookup tokens, D channels on the patch grid."""
        dim, patch = self.config.embed_dim, self.config.patch_size
        return [{"module": f"blocks.{i}", "num_chs": dim, "reduction": patch} for i in range(len(self.blocks))]

    def forward_intermediates(
        self,
        images: Tensor,
        indices: BlockIndices | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        grid: int | tuple[int, ...] | None = None,
    ) -> list[Tensor] | tuple[LookupViTOutput, list[Tensor]]:
        """The lookup tokens after the chosen blocks (`block_indices`), on the patch grid.

        Every block's feature map is (B, D, H/p, W/p) ("NCHW") or (B, N, D) ("NLC"). `norm` applies
        the final lookup norm; `stop_early` skips the blocks after the last one taken. Without
        `intermediates_only`, forward_features' output for the blocks that ran comes first.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if not self.config.use_lookup_tokens or len(self.config.patch_grid) != 2:
            raise ValueError("forward_intermediates returns lookup tokens of images: it needs use_lookup_tokens=True and images")
        taken = block_indices(len(self.blocks), indices)
        compressed, lookup, compressed_grid, lookup_grid = self.embed_tokens(images, grid)
        intermediates = []
        for index, block in enumerate(self.blocks[: max(taken) + 1] if stop_early else self.blocks):
            compressed, lookup, _ = self.run_lookupvit_block(block, compressed, lookup)
            if index in taken:
                tokens = self.norm_lookup(lookup) if norm else lookup
                if output_fmt == "NCHW":
                    tokens = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *lookup_grid)
                intermediates.append(tokens)
        if intermediates_only:
            return intermediates
        return self.finish(compressed, lookup, compressed_grid, lookup_grid, []), intermediates

    def prune_intermediate_layers(self, indices: BlockIndices = 1, prune_norm: bool = False, prune_head: bool = True) -> list:
        """Drop the blocks after the last one `indices` takes (timm's features_only); the kept indices."""
        taken = block_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max(taken) + 1]
        if prune_norm:
            self.norm_compressed, self.norm_lookup = nn.Identity(), nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return taken
