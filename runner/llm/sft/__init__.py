"""QLoRA supervised fine-tuning: data stream, model, loss, training loop, exact-resume checkpoints."""
