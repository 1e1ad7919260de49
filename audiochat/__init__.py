"""An open, Jupyter-centric reference implementation of AudioChat: one transformer that tells, edits and understands multi-speaker audio stories

Modules:

- `audiochat.cli`: One console script, one subcommand per job. Each subcommand lives in the module that does the work and is imported only when it runs, so `audiochat --help` is instant.
- `audiochat.scene`: `Source` and `Scene`, their JSON schema and validation, the compact serialisation the language model writes, edit diffs, and export of the speech to SegLST for tcpWER.
- `audiochat.tokenizer`: A byte-level BPE trained in seconds on the project's dialogue text, saved and reloaded as a 🤗 `transformers` fast tokenizer, with special tokens for roles, turn ends and the start and end of an audio span; the same special tokens added to any pretrained Hugging Face tokenizer."""

__version__ = "0.0.1"
