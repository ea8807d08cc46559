"""What a RetroMAE step is made of, counted (not timed): multiply-adds per token against the two masked-LM anchors.

Per token of a batch, forward pass (backward multiplies every term alike, so the ratios hold for a training step):

- encoder: each layer's products with weight matrices (4 H^2 for attention, 2 H I for the feed-forward, 3 H I
  for a gated one as ModernBERT's) and its attention scores (2 H x the keys a query sees: L, or the local window);
- masked-LM head: its transform (H^2) and the vocabulary projection (H V);
- masked LM as it is ("full"): encoder + head at every token; with sparse prediction ("sparse"): encoder + head at
  the labelled share (RetroMAE's encoder_mask_ratio, 0.3);
- RetroMAE: the sparse masked LM (its encoder loss is exactly that) + one decoder layer (4 H^2 + 2 H I_dec + 2 H L)
  + the head at every token (the decoder reconstructs the whole input).

Run: `python benchmarks/step_composition.py` (instant; prints a Markdown table). Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse

ENCODER_MASK_RATIO = 0.3  # RetroMAECollator's default share of labelled encoder tokens

# name: (hidden, layers, feed-forward, vocabulary, gated feed-forward, global attention every n layers, local window,
# longest input)
SHAPES = {
    "small BERT (`train_step.py`, hidden 256)": (256, 4, 1024, 30522, False, 1, None, 512),
    "BERT-base": (768, 12, 3072, 30522, False, 1, None, 512),
    "RoBERTa-base": (768, 12, 3072, 50265, False, 1, None, 512),
    "XLM-R-base": (768, 12, 3072, 250002, False, 1, None, 512),
    "ModernBERT-base": (768, 22, 1152, 50368, True, 3, 128, 8192),
    "tiny ModernBERT (long_context.py)": (64, 2, 128, 50368, True, 3, 128, 8192),
}


def per_token(shape: tuple, length: int) -> dict[str, float]:
    """Multiply-adds per token of the encoder, the head, the decoder layer, and the three steps built from them."""
    hidden, layers, ffn, vocab, gated, global_every, window, _ = shape
    encoder = 0.0
    for layer in range(layers):
        keys = length if window is None or layer % global_every == 0 else min(length, window)
        encoder += 4 * hidden**2 + (3 if gated else 2) * hidden * ffn + 2 * hidden * keys
    head = hidden**2 + hidden * vocab
    decoder = 4 * hidden**2 + 2 * hidden * ffn + 2 * hidden * length  # RetroMAE's decoder_intermediate_size = I
    sparse = encoder + ENCODER_MASK_RATIO * head
    return {
        "encoder": encoder,
        "head": head,
        "full": encoder + head,
        "sparse": sparse,
        "retromae": sparse + decoder + head,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lengths", default="512,8192", help="comma-separated sequence lengths (up to each shape's longest input)"
    )
    args = parser.parse_args(argv)
    print(
        "| shape | L | vocabulary projection's share of the full masked-LM step | RetroMAE / masked LM (full) "
        "| RetroMAE / masked LM (sparse) |"
    )
    print("|---|---|---|---|---|")
    for name, shape in SHAPES.items():
        for length in (int(value) for value in args.lengths.split(",") if value and int(value) <= shape[-1]):
            counts = per_token(shape, length)
            share = shape[0] * shape[3] / counts["full"]
            print(
                f"| {name} | {length:,} | {share:.0%} | {counts['retromae'] / counts['full']:.2f} "
                f"| {counts['retromae'] / counts['sparse']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
