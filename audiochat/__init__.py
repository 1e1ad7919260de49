"""An open, Jupyter-centric reference implementation of AudioChat: one transformer that tells, edits and understands multi-speaker audio stories

Modules:

- `audiochat.cli`: One console script, one subcommand per job. Each subcommand lives in the module that does the work and is imported only when it runs, so `audiochat --help` is instant.
- `audiochat.codec`: A DAC-style convolutional autoencoder with a VAE bottleneck: 16 kHz stereo in, 40 latent frames per second out, each channel encoded on its own and the two latent vectors stacked per frame. Losses, training, a latent cache for language-model training, and an evaluation next to trivial baselines.
- `audiochat.config`: One resolved config describes a training run: data, codec, model, loss, optimiser, run settings. Presets `tiny`, `small` and `base`; a YAML file and dotted command-line overrides (`--model.d_model=256`) on top, type-checked.
- `audiochat.copilot`: A tool-calling loop over OpenAI-format messages, a user simulator and a sound designer, one `ChatLLM` interface with three backends (an offline template model, a transformers chat model, any OpenAI-compatible server), and the validation filter that keeps only consistent dialogues.
- `audiochat.data`: `audiochat data build`: simulated dialogues (notebook 04) written as sharded, resumable, inspectable folders, built in parallel and deterministically from seeds; and StoryGen-Eval-mini, a fixed evaluation split.
- `audiochat.diffusion`: The noising process the forcing loss trains on and the sampler the chat engine generates audio with: a continuous cosine schedule with v-prediction (flow matching as an alternative), Karras noise levels, DPM-Solver++(2M) and an Euler/DDIM baseline, classifier-free guidance. Verified on toy data whose exact denoiser is known, and against `diffusers`.
- `audiochat.forcing`: One sequence per dialogue (text tokens and audio latent spans), one loss for both: L = L_LM + λ L_diff with λ = 5, and an **independent noise level for every audio span**.
- `audiochat.scene`: `Source` and `Scene`, their JSON schema and validation, the compact serialisation the language model writes, edit diffs, and export of the speech to SegLST for tcpWER.
- `audiochat.sct`: One model class, `AudioChatModel`, with four architectures behind one interface: the paper's **SCT** (understanding layers from a pretrained LLM + new generation layers), **Dense** (plain Transfusion), **MoT** (Mixture-of-Transformers) and **DiT** (a standalone diffusion transformer).
- `audiochat.tokenizer`: A byte-level BPE trained in seconds on the project's dialogue text, saved and reloaded as a 🤗 `transformers` fast tokenizer, with special tokens for roles, turn ends and the start and end of an audio span; the same special tokens added to any pretrained Hugging Face tokenizer.
- `audiochat.tools`: Text-to-speech with espeak-ng, a procedural sound-effect and music synthesiser, the mixer that renders a scene into a stereo story, and the same tools as JSON-schema functions for tool-calling language models.
- `audiochat.train`: The loop that trains every preset: dialogues streamed into packed sequences, AdamW with warmup + cosine, EMA, evaluation, TensorBoard, atomic safetensors checkpoints with exact resume, NaN/inf skipping, DDP / FSDP2 under `torchrun`. The `tiny` preset trains on a laptop CPU in a minute.
- `audiochat.transformer`: RMSNorm, rotary position embeddings (RoPE), grouped-query attention through `scaled_dot_product_attention`, SwiGLU; the attention mask built from a per-position layout (causal text, bidirectional audio spans, packed documents, classifier-free-guidance isolation); a KV cache for decoding; and loading Llama-family checkpoints (Llama, Qwen2, SmolLM2) from Hugging Face files."""

__version__ = "0.0.1"
