"""The inference engine: batched decoding over the model's KV cache, and beam search."""
