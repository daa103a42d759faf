"""Customization jobs: data validation, LoRA / full fine-tune, continued pre-training,
checkpoints, and export of the result as a GGUF that llama.cpp serves.

The server process only validates, records and supervises (:mod:`.runner`); PyTorch runs
in a separate worker process (:mod:`.worker`), so serving stays responsive.
"""
