"""A setting that the chosen task, command or mesh does not read is refused: exit 2, one line
naming what would read it, and nothing written (the run folder is not created)."""

import gin
import pytest

from hire_cli import errors
from hire_cli.cli import commands, gin_utils, reads, runner
from hire_cli.lib import data_config


def _refused(command, bindings, tmp_path, capsys, files=None) -> str:
  run = tmp_path / "run"
  capsys.readouterr()
  code = runner.execute(command, files, [f"MODEL_DIR = '{run}'", *bindings])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1, (code, err)
  assert not run.exists(), f"{bindings} created {run}"
  return err[0].removeprefix(f"hire {command}: error: ")


DATA = {
    "files without the text task": (
        ["TRAIN_FILES = 'mine/*.txt'"],
        "TRAIN_FILES is set but TASK='hire_corpus_lm' does not read it; add "
        "--gin.TASK=text_files"),
    "train files with only the eval task on files": (
        ["EVAL_TASK = 'text_files'", "TRAIN_FILES = 'mine/*.txt'", "EVAL_FILES = 'held/*.txt'"],
        "TRAIN_FILES is set but TASK='hire_corpus_lm' does not read it"),
    "eval files without the text task": (
        ["EVAL_FILES = 'held/*.txt'"],
        "EVAL_FILES is set but TASK='hire_corpus_lm' does not read it; add "
        "--gin.EVAL_TASK=text_files"),
    "eval files with another eval task": (
        ["TASK = 'text_files'", "TRAIN_FILES = 'mine/*.txt'", "EVAL_FILES = 'held/*.txt'",
         "EVAL_TASK = 'lm1b_lm'"],
        "EVAL_FILES is set but EVAL_TASK='lm1b_lm' does not read it"),
    "text key without the text task": (
        ["TEXT_KEY = 'body'"],
        "TEXT_KEY is set but TASK='hire_corpus_lm' does not read it; it is read by text_files"),
    "text key with neither task on files": (
        ["TEXT_KEY = 'body'", "EVAL_TASK = 'lm1b_lm'"],
        "TEXT_KEY is set but neither TASK='hire_corpus_lm' nor EVAL_TASK='lm1b_lm' reads it"),
    "TFDS data_dir for the shipped corpus": (
        ["DataConfig.tfds_data_dir = '/data/tfds'"],
        "DataConfig.tfds_data_dir is set but TASK='hire_corpus_lm' does not read it; it is "
        "read by lm1b_lm and c4_lm"),
}


@pytest.mark.parametrize("command", ["train", "eval", "generate"])
@pytest.mark.parametrize("case", sorted(DATA))
def test_a_data_setting_the_task_does_not_read(case, command, tmp_path, capsys):
  bindings, expected = DATA[case]
  assert _refused(command, bindings, tmp_path, capsys).startswith(expected)


def test_data_settings_the_tasks_read_are_accepted():
  data_config.DataConfig(task="text_files", train_files="a/*.txt", eval_files="b/*.txt",
                         text_key="body")
  data_config.DataConfig(eval_task="text_files", eval_files="b/*.txt", text_key="body")
  data_config.DataConfig(task="lm1b_lm", tfds_data_dir="/data/tfds")
  with pytest.raises(errors.UserError, match="TRAIN_FILES is set"):
    data_config.DataConfig(eval_task="text_files", train_files="a/*.txt", eval_files="b")


def test_the_tfds_tasks_are_those_that_read_tfds_data_dir():
  from hire_cli.lib import tasks
  assert set(data_config.TFDS_TASKS) == set(tasks.PUBLIC_SOURCES)


def _only(command: str) -> list[str]:
  """The macros `hire command` reads and neither train nor eval does."""
  gin_utils.parse(None, [])
  mine = reads.reads(commands.COMMANDS[command][0])[0]
  run = set().union(*(reads.reads(commands.COMMANDS[c][0])[0] for c in reads.RUN_COMMANDS))
  return sorted(mine - run)


BENCH, GENERATE = _only("bench-latency"), _only("generate")


def test_bench_and_generate_have_settings_of_their_own():
  assert {"BENCH_BATCH", "CONTEXT_LEN", "DECODE_STEPS", "BENCH_VARIANTS"} <= set(BENCH)
  assert {"GENERATE_TOKENS", "TEMPERATURE", "TOP_K", "COMPARE_PROMPTS"} <= set(GENERATE)


@pytest.mark.parametrize("command", ["train", "eval", "generate", "import"])
@pytest.mark.parametrize("macro", BENCH)
def test_a_bench_setting_elsewhere(macro, command, tmp_path, capsys):
  message = _refused(command, [f"{macro} = None"], tmp_path, capsys)
  assert message == (f"{macro} is set but hire {command} does not read it; hire bench-latency "
                     "reads it; drop it here")


@pytest.mark.parametrize("command", ["train", "eval", "bench-latency"])
@pytest.mark.parametrize("macro", GENERATE)
def test_a_generate_setting_elsewhere(macro, command, tmp_path, capsys):
  message = _refused(command, [f"{macro} = 1"], tmp_path, capsys)
  assert message.startswith(f"{macro} is set but hire {command} does not read it; ")
  assert "hire generate reads it" in message


@pytest.mark.parametrize("macro", ["MESH_DATA", "MESH_FSDP", "MESH_MODEL"])
def test_mesh_axes_where_no_mesh_is_used(macro, tmp_path, capsys):
  message = _refused("import", [f"{macro} = 2"], tmp_path, capsys)
  assert message.startswith(f"{macro} is set but hire import does not read it; hire train, ")


def test_a_direct_binding_of_another_command(tmp_path, capsys):
  message = _refused("train", ["bench_latency.warmup_steps = 1"], tmp_path, capsys)
  assert message.startswith("bench_latency.warmup_steps is set but hire train does not read it")


def test_a_hire_knob_on_a_dense_model(tmp_path, capsys):
  message = _refused("train", ["HiReSoftmaxConfig.k_prime = 64"], tmp_path, capsys)
  assert message.startswith("HiReSoftmaxConfig.k_prime is set but hire train does not read it; "
                            "no setting of this run refers to HiReSoftmaxConfig")
  message = _refused("train", ["ffn/ApproxConfig.rank = 4"], tmp_path, capsys,
                     files=["configs/experiments/tiny_hire_softmax.gin"])
  assert "no setting of this run refers to ffn/ApproxConfig" in message


def test_what_a_command_reads_is_accepted():
  """Scoped and unscoped knobs of a HiRE model, and one run's train and eval flags passed to
  each command that reads its model."""
  gin_utils.parse(["configs/experiments/tiny_hire.gin"], [])
  for command in ("train", "eval", "generate", "bench-latency"):
    reads.refuse_unread(command, ["softmax/ApproxConfig.rank = 8", "ApproxConfig.bits = 8",
                                  "HiReFfnConfig.group_size = 4", "EVAL_EVERY = 0",
                                  "BATCH_SIZE = 2", "EVAL_BATCHES = 1", "TRAIN_STEPS = 3"])
  reads.refuse_unread("bench-latency", ["BENCH_BATCH = 2", "DECODE_STEPS = 4"])
  reads.refuse_unread("generate", ["GENERATE_TOKENS = 2", "TOP_K = 3"])
  reads.refuse_unread("import", ["MODEL_DIR = 'x'", "IMPORT_DTYPE = 'bfloat16'"])
  gin.clear_config()


def test_command_line_names():
  assert reads.set_on_command_line(["A = 1", "softmax/ApproxConfig.rank = 4\nB = %A",
                                    "A = 2"]) == ["A", "softmax/ApproxConfig.rank", "B"]
