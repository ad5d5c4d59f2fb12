"""The inference engine (issue #12): batched generation over one loaded model."""
