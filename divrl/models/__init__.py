"""Policy models for divrl."""

from divrl.models.decoder import (PRESETS, Decoder, DecoderConfig, RopeScaling,
                                  apply_rope, param_count, rope_frequencies)
from divrl.models.hf import (CheckpointError, CheckpointNotFoundError,
                             config_from_hf, config_to_hf, load_hf,
                             read_hf_config, save_hf)
from divrl.models.sampler import (SampleOutput, SamplingConfig,
                                  concat_prompt_response, filter_logits,
                                  make_sampler, sample)
from divrl.models.tokenizer import (CharTokenizer, HFTokenizer, Tokenizer,
                                    encode_batch)

__all__ = ["PRESETS", "Decoder", "DecoderConfig", "RopeScaling", "apply_rope",
           "param_count", "rope_frequencies",
           "CheckpointError", "CheckpointNotFoundError", "config_from_hf",
           "config_to_hf", "load_hf", "read_hf_config", "save_hf",
           "CharTokenizer", "HFTokenizer", "Tokenizer", "encode_batch",
           "SampleOutput", "SamplingConfig", "concat_prompt_response",
           "filter_logits", "make_sampler", "sample"]
