"""Policy models for divrl."""

from divrl.models.decoder import (PRESETS, Decoder, DecoderConfig, RopeScaling,
                                  apply_rope, param_count, rope_frequencies)

__all__ = ["PRESETS", "Decoder", "DecoderConfig", "RopeScaling", "apply_rope",
           "param_count", "rope_frequencies"]
