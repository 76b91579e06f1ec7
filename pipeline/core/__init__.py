"""The core that export/ and infer/ read: errors, files, process set-up, the vocabulary and tokenizer, the export
format, pooling and the Hugging Face parameter mapping. Imports no paddle and no training code (a test checks)."""
