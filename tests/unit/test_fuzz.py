"""Fuzzing with Hypothesis: the parts that read what users and strangers send.

- every tokenizer kind round-trips any Unicode string (the char tokenizer: any string over
  its vocabulary), and its streaming decoder, fed one id at a time, gives the same text;
- the config loader, given any YAML document, builds a config or raises a one-line
  UserError;
- the CLI, given any combination of real flags with any values, exits 0 or 2 with one
  `error:` line, never a traceback;
- the server's request parsers (/generate and OpenAI's), given any JSON or any bytes,
  return options or refuse with their 4xx.

The example counts are fixed (`settings(max_examples=...)`), so CI runs the same number of
cases every time; `derandomize` makes them the same cases, so a failure reproduces.
"""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundamentallm import openai_api
from fundamentallm.cli import build_parser, main
from fundamentallm.config import Config
from fundamentallm.config.loading import apply_mapping, load_yaml, validate
from fundamentallm.errors import UserError
from fundamentallm.sampling import SamplingOptions
from fundamentallm.server import RequestError, parse_request
from fundamentallm.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, StreamDecoder, tokenizer_from_dict
from helpers import sample_text

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Any JSON value, nested a few levels.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)


# ---------------------------------------------------------------- tokenizers
@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(sample_text(20_000), 300)


@FUZZ
@given(text=st.text(max_size=200))
def test_the_byte_tokenizer_round_trips_any_string(text):
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text


@FUZZ
@given(text=st.text(max_size=200))
def test_the_bpe_tokenizer_round_trips_any_string(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@FUZZ
@given(vocabulary=st.text(min_size=1, max_size=60), data=st.data())
def test_the_char_tokenizer_round_trips_any_string_over_its_vocabulary(vocabulary, data):
    tok = CharTokenizer.train(vocabulary)
    text = data.draw(st.text(alphabet=sorted(set(vocabulary)), max_size=100))
    assert tok.decode(tok.encode(text)) == text
    restored = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))  # as saved in a checkpoint
    assert restored.encode(text) == tok.encode(text)


@FUZZ
@given(text=st.text(max_size=120))
def test_streaming_decoding_one_id_at_a_time_gives_the_same_text(bpe, text):
    """A multi-byte character split over several ids comes out whole, once."""
    for tok in (ByteTokenizer(), bpe):
        decoder = StreamDecoder(tok)
        pieces = [decoder.push(i) for i in tok.encode(text)]
        assert "".join(pieces) + decoder.flush() == text


@FUZZ
@given(ids=st.lists(st.integers(0, 255), max_size=60))
def test_any_byte_ids_decode_to_text(ids):
    assert isinstance(ByteTokenizer().decode(ids), str)  # invalid UTF-8 becomes U+FFFD, never an error


# ---------------------------------------------------------------- the config loader
yaml_documents = st.one_of(
    json_values.map(lambda v: yaml.safe_dump(v)),
    st.dictionaries(st.sampled_from(["model", "data", "optim", "training", "checkpoint", "tracking", "bogus"]),
                    st.dictionaries(st.sampled_from(["model_dim", "num_heads", "learning_rate", "epochs",
                                                     "dropout", "tokenizer", "precision", "output_dir", "x"]),
                                    json_values, max_size=4), max_size=4).map(yaml.safe_dump),
    st.text(max_size=200),  # anything at all
)


@FUZZ
@given(document=yaml_documents)
def test_the_config_loader_builds_a_config_or_says_why_in_one_line(tmp_path, document):
    path = tmp_path / "config.yaml"
    path.write_text(document, encoding="utf-8")
    try:
        mapping = load_yaml(path)
        cfg = Config()
        if not isinstance(mapping, dict):
            raise UserError("not a mapping")
        apply_mapping(cfg, mapping, str(path))
        validate(cfg)
    except UserError as exc:
        assert str(exc).strip() and "\n" not in str(exc)


# ---------------------------------------------------------------- the CLI parser
def flags_of(command: str) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return [o for action in sub._actions for o in action.option_strings
            if o.startswith("--") and o not in ("--help", "--version")]


COMMAND_FLAGS = {name: flags_of(name) for name in ("train", "generate", "evaluate", "serve", "export")}
flag_values = st.one_of(st.none(), st.integers(-10, 10**6).map(str), st.floats(allow_nan=True).map(str),
                        st.sampled_from(["auto", "fp32", "cpu", "true", "", "-1", "nan", "1e-3", "x/y"]),
                        st.text(max_size=8))


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMAND_FLAGS)))
    argv = [command, "missing-input.txt" if command == "train" else "missing.pt"]
    for flag in draw(st.lists(st.sampled_from(COMMAND_FLAGS[command]), max_size=6)):
        value = draw(flag_values)
        argv += [flag] if value is None else [flag, value]
    return argv


@FUZZ
@given(argv=command_lines())
def test_any_flags_exit_0_or_2_with_one_line_never_a_traceback(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)  # whatever a flag names is relative to an empty directory
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc in (0, 2), (argv, rc, err)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (argv, err)


# ---------------------------------------------------------------- the server's request parsers
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["prompt", "max_tokens", "temperature", "top_k", "top_p", "stream",
                                     "num_samples", "seed", "stop", "beam_width", "min_p", "bogus"]),
                    json_values, max_size=6).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


@FUZZ
@given(body=bodies)
def test_the_generate_parser_returns_options_or_a_4xx(body):
    try:
        prompt, stream, options = parse_request(body, SamplingOptions(), 1000)
    except RequestError as exc:
        assert 400 <= exc.status < 500 and str(exc).strip()
    else:
        assert isinstance(prompt, str) and prompt and isinstance(stream, bool)
        assert options.max_tokens <= 1000


openai_bodies = st.dictionaries(
    st.sampled_from(["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "n", "stream", "stop",
                     "seed", "logprobs", "echo", "presence_penalty", "frequency_penalty", "user", "bogus"]),
    json_values | st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]), json_values,
                                           max_size=3), max_size=3),
    max_size=7)


@FUZZ
@given(values=openai_bodies, chat=st.booleans())
def test_the_openai_parser_returns_a_request_or_an_api_error(values, chat):
    try:
        request = openai_api.Request(values, "tiny", 1000, chat)
    except openai_api.APIError as exc:
        assert 400 <= exc.status < 500 and exc.body()["error"]["message"].strip()
    else:
        assert isinstance(request.prompt, str) and request.options.max_tokens <= 1000
