"""Every bad input gets a clear answer: through the real CLIs, each case below exits non-zero with exactly one
line on stderr, `error: ...`, naming the problem (and the fix where one helps), and no traceback. Each row of
the table is its own test.

Every file and format case runs as a subprocess, as a user runs it (a few at a time). The command-line
validation rows (the error names an option) run in this process through the same entry point, `run_cli(main)`,
with stdout and stderr captured: the same assertions without a fresh interpreter importing torch for each. The
first row of each CLI stays a subprocess, so the real `python -m` path of every CLI is still exercised."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import torch
from conftest import PERIODIC_TEXT, ROOT, TINY, run_module
from nanogpt_reference import GPT as NanoGPT
from nanogpt_reference import GPTConfig, prepare_meta, write_files

from gpt.errors import run_cli


@dataclass(frozen=True)
class Case:
    id: str
    module: str
    args: tuple[str, ...]  # "{name}" is replaced by the path of the fixture file `name` (see `paths`)
    expect: str  # a phrase of the one error line; "" for the one allowed case
    needs_no_cuda: bool = False


def case(id, module, *args, expect, needs_no_cuda=False):
    return Case(id, module, args, expect, needs_no_cuda)


SAMPLE = ("--ckpt", "{ckpt}", "--max-new-tokens", "5")
TRAIN = ("--data", "{text}", "--out-dir", "{fresh}", *TINY, "--max_iters", "1")
INSPECT = ("--ckpt", "{ckpt}", "--out", "{fresh}", "--prompt", "the fox")
CASES = [
    # ---- gpt.sample: prompt and sampling options
    case("prompt outside the vocabulary", "gpt.sample", *SAMPLE, "--prompt", "ROMEO#é",
         expect="the prompt has 2 character(s) not in the model's vocabulary: '#', 'é'"),
    case("empty prompt is allowed (starts from a newline)", "gpt.sample", *SAMPLE, "--prompt", "", expect=""),
    case("max-new-tokens negative", "gpt.sample", *SAMPLE, "--max-new-tokens", "-1",
         expect="--max-new-tokens must be in [0, 1,000,000], got -1"),
    case("max-new-tokens absurd", "gpt.sample", *SAMPLE, "--max-new-tokens", "10000000000",
         expect="--max-new-tokens must be in [0, 1,000,000], got 10000000000"),
    case("max-new-tokens not a number", "gpt.sample", *SAMPLE, "--max-new-tokens", "many",
         expect="argument --max-new-tokens: invalid int value: 'many' (see `python -m gpt.sample --help`)"),
    case("temperature negative", "gpt.sample", *SAMPLE, "--temperature", "-0.5",
         expect="--temperature must be >= 0 (0 = greedy), got -0.5"),
    case("temperature nan", "gpt.sample", *SAMPLE, "--temperature", "nan", expect="--temperature must be >= 0"),
    case("top-k negative", "gpt.sample", *SAMPLE, "--top-k", "-3", expect="--top-k must be >= 0 (0 = off), got -3"),
    case("top-p zero", "gpt.sample", *SAMPLE, "--top-p", "0", expect="--top-p must be in (0, 1], got 0.0"),
    case("top-p above one", "gpt.sample", *SAMPLE, "--top-p", "1.5", expect="--top-p must be in (0, 1], got 1.5"),
    case("num-samples zero", "gpt.sample", *SAMPLE, "--num-samples", "0",
         expect="--num-samples must be in [1, 1024], got 0"),
    case("num-samples absurd", "gpt.sample", *SAMPLE, "--num-samples", "100000000",
         expect="--num-samples must be in [1, 1024], got 100000000"),
    case("threads zero", "gpt.sample", *SAMPLE, "--threads", "0", expect="argument --threads: must be >= 1, got 0"),
    case("unknown backend", "gpt.sample", *SAMPLE, "--backend", "tensorflow",
         expect="argument --backend: invalid choice: 'tensorflow'"),
    case("sample --device cuda without CUDA", "gpt.sample", *SAMPLE, "--device", "cuda",
         expect="--device cuda was asked for but CUDA is not available; use --device cpu", needs_no_cuda=True),
    # ---- gpt.sample: the checkpoint
    case("checkpoint directory does not exist", "gpt.sample", "--ckpt", "{nowhere}",
         expect="does not exist; train one with `python -m gpt.train --out-dir DIR`"),
    case("checkpoint is an .onnx file", "gpt.sample", "--ckpt", "{garbage_onnx}",
         expect="is a file, not a checkpoint directory (an .onnx file needs --backend onnxruntime)"),
    case("model.safetensors missing", "gpt.sample", "--ckpt", "{no_weights}",
         expect="model.safetensors is missing; train one with"),
    case("model.safetensors empty", "gpt.sample", "--ckpt", "{empty_weights}",
         expect="model.safetensors is empty; restore it or train one"),
    case("model.safetensors truncated", "gpt.sample", "--ckpt", "{truncated_weights}",
         expect="model.safetensors does not match the sha256 in config.json: the file is corrupt or truncated"),
    case("model.safetensors bit-flipped", "gpt.sample", "--ckpt", "{bitflip_weights}",
         expect="model.safetensors does not match the sha256 in config.json: the file is corrupt or truncated"),
    case("config.json missing", "gpt.sample", "--ckpt", "{no_config}",
         expect="config.json is missing: ", ),
    case("config.json not JSON", "gpt.sample", "--ckpt", "{bad_json}", expect="config.json is not valid JSON"),
    case("config.json missing a model field", "gpt.sample", "--ckpt", "{no_n_head}",
         expect="config.json: model config is missing field(s): n_head"),
    case("config.json missing the vocabulary", "gpt.sample", "--ckpt", "{no_vocab}",
         expect="config.json is missing field(s): vocab"),
    case("config.json field of the wrong type", "gpt.sample", "--ckpt", "{string_n_layer}",
         expect="config.json: model field 'n_layer' has the wrong type or value: 'two'"),
    case("config.json shapes disagree with the weights", "gpt.sample", "--ckpt", "{wide_config}",
         expect="weights disagree with config.json at h.0.attn.c_attn.bias: file has (96,), config expects (192,)"),
    case("config.json of a newer format", "gpt.sample", "--ckpt", "{future_format}",
         expect="config.json has format_version 99; this version reads 1"),
    case("config.json vocab_size disagrees with its vocab", "gpt.sample", "--ckpt", "{vocab_size_off}",
         expect="characters, vocab_size says 99"),
    # ---- gpt.sample --backend onnxruntime: the ONNX file
    case("ONNX file does not exist", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{nowhere}.onnx",
         expect="does not exist; export one with `python -m export.onnx --ckpt out`"),
    case("ONNX file empty", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{empty_onnx}",
         expect="is empty; export one with"),
    case("not an ONNX file", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{garbage_onnx}",
         expect="is not a loadable ONNX model (truncated or not ONNX?)"),
    case("truncated ONNX file", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{truncated_onnx}",
         expect="is not a loadable ONNX model (truncated or not ONNX?)"),
    case("ONNX without our metadata", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{foreign_onnx}",
         expect="lacks metadata vocab, block_size, n_layer, n_head, n_embd, val_loss, layout, format_version: it was "
                "not written by export.onnx"),
    # ---- gpt.data
    case("data source with the wrong checksum", "gpt.data", "--source", "{text}", "--data-dir", "{fresh}",
         expect="checksum mismatch for {text}: sha256 "),
    case("data source does not exist", "gpt.data", "--source", "{nowhere}", "--data-dir", "{fresh}",
         expect="source file {nowhere} does not exist"),
    case("data dir is a file", "gpt.data", "--source", "{text}", "--data-dir", "{a_file}",
         expect="exists and is not a directory; choose another --data-dir"),
    # ---- gpt.train
    case("train data with the wrong checksum", "gpt.train", "--data-dir", "{bad_data_dir}", "--out-dir", "{fresh}",
         expect="has the wrong checksum; delete it and run `python -m gpt.data` again"),
    case("train without data", "gpt.train", "--data-dir", "{nowhere}", "--out-dir", "{fresh}",
         expect="not found; run `python -m gpt.data` (or `make data`) first"),
    case("train data file does not exist", "gpt.train", "--data", "{nowhere}", "--out-dir", "{fresh}",
         expect="data file {nowhere} does not exist"),
    case("train data not UTF-8", "gpt.train", "--data", "{latin1}", "--out-dir", "{fresh}",
         expect="is not valid UTF-8 (invalid continuation byte at byte 3)"),
    case("unknown preset", "gpt.train", "--preset", "huge", "--out-dir", "{fresh}",
         expect="unknown preset 'huge'; choose one of: cpu, shakespeare, large"),
    case("n_embd not divisible by n_head", "gpt.train", *TRAIN, "--n_embd", "30", "--n_head", "4",
         expect="n_embd (30) must be divisible by n_head (4)"),
    case("train --device cuda without CUDA", "gpt.train", *TRAIN, "--device", "cuda",
         expect="--device cuda was asked for but CUDA is not available; use --device cpu", needs_no_cuda=True),
    case("out-dir is an existing file", "gpt.train", "--data", "{text}", "--out-dir", "{a_file}",
         expect="output directory {a_file} exists and is a file; choose another --out-dir"),
    case("batch size not a number", "gpt.train", *TRAIN, "--batch_size", "lots",
         expect="argument --batch_size/--batch-size: invalid int value: 'lots' (see `python -m gpt.train --help`)"),
    case("bias not a boolean", "gpt.train", *TRAIN, "--bias", "maybe",
         expect="argument --bias: expected true or false, got 'maybe'"),
    case("batch size zero", "gpt.train", *TRAIN, "--batch_size", "0", expect="--batch_size must be >= 1, got 0"),
    case("learning rate negative", "gpt.train", *TRAIN, "--learning_rate", "-1",
         expect="--learning_rate must be a finite number >= 0, got -1.0"),
    case("dropout out of range", "gpt.train", *TRAIN, "--dropout", "1.5", expect="dropout must be in [0, 1), got 1.5"),
    case("block size larger than the text", "gpt.train", *TRAIN, "--block_size", "100000",
         expect="fewer than block_size + 1 = 100001; use more text or a smaller --block_size"),
    case("resume without a saved state", "gpt.train", *TRAIN, "--resume",
         expect="train_state.pt not found; start without --resume"),
    case("resume from a corrupt state", "gpt.train", "--data", "{text}", "--out-dir", "{corrupt_state}", *TINY,
         "--resume", expect="train_state.pt cannot be read (RuntimeError: PytorchStreamReader failed"),
    case("resume from a state that would run code", "gpt.train", "--data", "{text}", "--out-dir", "{evil_state}",
         *TINY, "--resume", expect="train_state.pt cannot be read (UnpicklingError: Weights only load failed"),
    case("stop-after zero", "gpt.train", *TRAIN, "--stop-after", "0", expect="--stop-after must be >= 1, got 0"),
    case("time budget not a duration", "gpt.train", *TRAIN, "--time-budget", "5x",
         expect="--time-budget must be a positive duration such as 90s, 8m or 1h, got '5x'"),
    case("time budget zero", "gpt.train", *TRAIN, "--time-budget", "0m",
         expect="--time-budget must be a positive duration"),
    case("time budget 0", "gpt.train", *TRAIN, "--time-budget", "0",
         expect="--time-budget must be a positive duration"),
    case("time budget negative", "gpt.train", *TRAIN, "--time-budget=-1m",
         expect="--time-budget must be a positive duration such as 90s, 8m or 1h, got '-1m'"),
    case("time budget words", "gpt.train", *TRAIN, "--time-budget", "abc",
         expect="--time-budget must be a positive duration such as 90s, 8m or 1h, got 'abc'"),
    case("unknown optimizer", "gpt.train", *TRAIN, "--optimizer", "sgd",
         expect="--optimizer must be one of adamw, muon, got 'sgd'"),
    case("muon learning rate negative", "gpt.train", *TRAIN, "--muon_lr", "-1",
         expect="--muon_lr must be a finite number >= 0, got -1.0"),
    # ---- speculative decoding (gpt.sample, gpt.serve)
    case("speculative with the torch backend", "gpt.sample", *SAMPLE, "--speculative", "ngram",
         expect="--speculative needs --backend onnxruntime, not torch"),
    case("speculative with several samples", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{gqa_onnx}",
         "--speculative", "ngram", "--num-samples", "2",
         expect="--speculative decodes one sample (batch 1); drop --num-samples or run once per --seed"),
    case("show-accepted without speculative", "gpt.sample", *SAMPLE, "--show-accepted",
         expect="--show-accepted colours accepted drafts: it needs --speculative distilled|ngram|FILE"),
    case("speculative on the portable layout", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{std_onnx}",
         "--speculative", "ngram", expect="--speculative needs the gqa layout; {std_onnx} has the onnx layout"),
    case("draft tokens zero", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{gqa_onnx}", "--speculative",
         "ngram", "--draft-tokens", "0", expect="--draft-tokens must be in [1, 16] (block_size 32 / 2), got 0"),
    case("draft tokens past half the block", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{gqa_onnx}",
         "--speculative", "ngram", "--draft-tokens", "17",
         expect="--draft-tokens must be in [1, 16] (block_size 32 / 2), got 17"),
    case("speculative neither a drafter's name nor a file", "gpt.sample", "--backend", "onnxruntime", "--onnx",
         "{gqa_onnx}", "--speculative", "bigram",
         expect="--speculative takes `distilled`, `ngram` or a draft model's .onnx file; bigram is none of them"),
    case("draft model with another vocabulary", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{gqa_onnx}",
         "--speculative", "{other_vocab_onnx}", expect="has another vocabulary (35 characters, the model 35): draft "
                                                       "with a file trained on the same text"),
    case("draft model with another block size", "gpt.sample", "--backend", "onnxruntime", "--onnx", "{gqa_onnx}",
         "--speculative", "{other_block_onnx}", expect="has block_size 16, the model 32: export a draft trained with "
                                                       "the same --block_size"),
    case("ngram index of another training text", "gpt.sample", "--backend", "onnxruntime", "--onnx",
         "{foreign_index_onnx}", "--speculative", "ngram", expect="indexes another training text (sha256 000000000000"),
    case("ngram index without its training text", "gpt.sample", "--backend", "onnxruntime", "--onnx",
         "{unindexed_onnx}", "--speculative", "ngram", "--data-dir", "{nowhere}",
         expect="the drafter is made from the training text once; {nowhere}/tinyshakespeare/input.txt "
                "does not exist: run `python -m gpt.data` or pass --ngram-text FILE"),
    case("distilled drafter without its training text", "gpt.sample", "--backend", "onnxruntime", "--onnx",
         "{unindexed_onnx}", "--speculative", "distilled", "--data-dir", "{nowhere}",
         expect="the drafter is made from the training text once; {nowhere}/tinyshakespeare/input.txt "
                "does not exist: run `python -m gpt.data` or pass --ngram-text FILE"),
    case("serve speculative with too many draft tokens", "gpt.serve", "--onnx", "{gqa_onnx}", "--speculative",
         "ngram", "--draft-tokens", "17", expect="--draft-tokens must be in [1, 16] (block_size 32 / 2), got 17"),
    case("serve speculative on Ray", "gpt.serve", "--ray", "--onnx", "{gqa_onnx}", "--speculative", "ngram",
         expect="--speculative runs in the single-process server; with --ray each replica decodes plainly"),
    # ---- gpt.serve (the engine opens the file, then the options the server checks)
    case("serve an ONNX file that does not exist", "gpt.serve", "--onnx", "{nowhere}.onnx",
         expect="does not exist; export one with `python -m export.onnx --ckpt out`"),
    case("serve an older export (format_version 2)", "gpt.serve", "--onnx", "{old_format_onnx}",
         expect="has format_version 2; this version reads 3: re-export it with `python -m export.onnx --ckpt CKPT "
                "--out {old_format_onnx}`"),
    case("sample an older export (format_version 2)", "gpt.sample", "--backend", "onnxruntime", "--onnx",
         "{old_format_onnx}", expect="has format_version 2; this version reads 3: re-export it"),
    case("serve the portable layout", "gpt.serve", "--onnx", "{portable_onnx}",
         expect="has the onnx layout; the engine needs the gqa layout"),
    case("serve with no slots", "gpt.serve", "--onnx", "{portable_onnx}", "--slots", "0",
         expect="--slots must be >= 1, got 0"),
    case("serve on a port out of range", "gpt.serve", "--onnx", "{portable_onnx}", "--port", "70000",
         expect="--port must be in [0, 65535], got 70000"),
    case("serve with a zero request timeout", "gpt.serve", "--onnx", "{portable_onnx}", "--request-timeout", "0",
         expect="--request-timeout must be > 0 seconds, got 0.0"),
    case("serve with a negative drain timeout", "gpt.serve", "--onnx", "{portable_onnx}", "--drain-timeout", "-1",
         expect="--drain-timeout must be >= 0 seconds, got -1.0"),
    case("serve with a negative queue", "gpt.serve", "--onnx", "{portable_onnx}", "--max-queue", "-1",
         expect="--max-queue must be >= 0, got -1"),
    case("serve with a negative prefill chunk", "gpt.serve", "--onnx", "{portable_onnx}", "--prefill-chunk", "-4",
         expect="--prefill-chunk must be >= 0 (0 = whole prompts), got -4"),
    case("serve the portable layout on Ray", "gpt.serve", "--ray", "--onnx", "{portable_onnx}",
         expect="has the onnx layout; the engine needs the gqa layout"),
    case("serve on Ray with no replicas", "gpt.serve", "--ray", "--onnx", "{portable_onnx}", "--replicas", "0",
         expect="--replicas must be >= 1, got 0"),
    case("serve on Ray autoscaling down from 3 to 1", "gpt.serve", "--ray", "--onnx", "{portable_onnx}",
         "--autoscale", "3:1", expect="--autoscale must be MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got '3:1'"),
    case("serve replicas without --ray", "gpt.serve", "--onnx", "{portable_onnx}", "--replicas", "2",
         expect="--replicas need --ray (replicas on Ray Serve)"),
    case("serve on Ray with replicas and autoscale", "gpt.serve", "--ray", "--onnx", "{portable_onnx}", "--replicas",
         "2", "--autoscale", "1:4", expect="--replicas and --autoscale exclude each other"),
    case("serve on a Ray cluster nobody runs", "gpt.serve", "--ray", "--onnx", "{portable_onnx}", "--ray-address",
         "127.0.0.1:1", expect="--ray-address 127.0.0.1:1: no Ray cluster answers there"),
    case("serve with an abbreviated option", "gpt.serve", "--onnx", "{portable_onnx}", "--replica", "2",
         expect="unrecognized arguments: --replica 2 (see `python -m gpt.serve --help`)"),
    # ---- export.onnx
    case("export a checkpoint that does not exist", "export.onnx", "--ckpt", "{nowhere}",
         expect="checkpoint directory {nowhere} does not exist; train one with"),
    case("export a bit-flipped checkpoint", "export.onnx", "--ckpt", "{bitflip_weights}", "--out", "{fresh}.onnx",
         expect="model.safetensors does not match the sha256 in config.json"),
    case("export to a non-.onnx name", "export.onnx", "--ckpt", "{ckpt}", "--out", "{fresh}.txt",
         expect="--out must end in .onnx"),
    case("export opset not a number", "export.onnx", "--opset", "latest",
         expect="argument --opset: invalid int value: 'latest' (see `python -m export.onnx --help`)"),
    # ---- gpt.convert nanogpt (nanoGPT's ckpt.pt + meta.pkl in)
    case("convert a ckpt.pt that does not exist", "gpt.convert", "nanogpt", "{nowhere}", "--out", "{unused}",
         expect="{nowhere} does not exist; give nanoGPT's checkpoint file (its out_dir/ckpt.pt)"),
    case("convert a corrupt ckpt.pt", "gpt.convert", "nanogpt", "{corrupt_state}/train_state.pt", "--out", "{unused}",
         expect="train_state.pt cannot be read (RuntimeError: PytorchStreamReader failed"),
    case("convert a ckpt.pt that would run code", "gpt.convert", "nanogpt", "{evil_state}/train_state.pt",
         "--out", "{unused}", expect="train_state.pt cannot be read (UnpicklingError: Weights only load failed"),
    case("convert a checkpoint of an unknown format", "gpt.convert", "nanogpt", "{ckpt}/train_state.pt",
         "--out", "{unused}", expect="is not a nanoGPT checkpoint: it has no 'model' and 'model_args' (found: "),
    case("convert a GPT-2 BPE checkpoint", "gpt.convert", "nanogpt", "{nano_bpe}/ckpt.pt", "--out", "{unused}",
         expect="is a GPT-2 BPE model (vocab_size 50304, no meta.pkl); this package is character-level"),
    case("convert without meta.pkl", "gpt.convert", "nanogpt", "{nano}/ckpt.pt", "--out", "{unused}",
         expect="ckpt.pt needs its vocabulary: add --meta data/DATASET/meta.pkl"),
    case("convert with the meta.pkl of another vocabulary", "gpt.convert", "nanogpt", "{nano}/ckpt.pt",
         "--meta", "{nano_bpe}/meta.pkl", "--out", "{unused}",
         expect="meta.pkl has 40 characters but {nano}/ckpt.pt was trained on a vocabulary of 35"),
    case("convert with a meta.pkl that would run code", "gpt.convert", "nanogpt", "{nano}/ckpt.pt",
         "--meta", "{evil_meta}", "--out", "{unused}",
         expect="system, which would run code; only a pickle of dicts, lists, strings and ints is read"),
    case("convert with a meta.pkl that is not a pickle", "gpt.convert", "nanogpt", "{nano}/ckpt.pt",
         "--meta", "{a_file}", "--out", "{unused}",
         expect="a_file is not a readable pickle (ValueError: could not convert string to int"),
    case("convert into a directory that is not empty", "gpt.convert", "nanogpt", "{nano}/ckpt.pt",
         "--meta", "{nano}/meta.pkl", "--out", "{ckpt}",
         expect="output directory {ckpt} exists and is not empty; choose another --out or empty it"),
    case("convert an unknown format", "gpt.convert", "llama", "{nano}/ckpt.pt",
         expect="argument FORMAT: invalid choice: 'llama' (choose from "),
    # ---- export.hf (Hugging Face out)
    case("hf export of a checkpoint that does not exist", "export.hf", "--ckpt", "{nowhere}", "--out", "{unused}",
         expect="checkpoint directory {nowhere} does not exist; train one with"),
    case("hf export of a bit-flipped checkpoint", "export.hf", "--ckpt", "{bitflip_weights}", "--out", "{unused}",
         expect="model.safetensors does not match the sha256 in config.json"),
    case("hf export into a directory that is not empty", "export.hf", "--ckpt", "{ckpt}", "--out", "{ckpt}",
         expect="output directory {ckpt} exists and is not empty; choose another --out or empty it"),
    # ---- gpt.inspect
    case("inspect a prompt outside the vocabulary", "gpt.inspect", *INSPECT, "--prompt", "ROMEO#é",
         expect="the prompt has 2 character(s) not in the model's vocabulary: '#', 'é'"),
    case("inspect an empty prompt", "gpt.inspect", *INSPECT, "--prompt", "",
         expect="--prompt is empty; give the text to look at"),
    case("inspect a prompt longer than block_size", "gpt.inspect", *INSPECT, "--prompt", "the fox " * 5,
         expect="the prompt has 40 characters, more than this model's block_size 32; shorten it"),
    case("inspect a checkpoint that does not exist", "gpt.inspect", "--ckpt", "{nowhere}", "--out", "{fresh}",
         expect="checkpoint directory {nowhere} does not exist; train one with"),
    case("inspect a layer that does not exist", "gpt.inspect", *INSPECT, "--layers", "0,2",
         expect="--layers: layer 2 does not exist; the model has 2 layers (0-1)"),
    case("inspect a head that does not exist", "gpt.inspect", *INSPECT, "--heads", "-1",
         expect="--heads: head -1 does not exist; the model has 2 heads (0-1)"),
    case("inspect layers not numbers", "gpt.inspect", *INSPECT, "--layers", "first",
         expect="argument --layers: expected comma-separated numbers such as 0,2, got 'first'"),
    case("inspect top-k zero", "gpt.inspect", *INSPECT, "--top-k", "0", expect="--top-k must be >= 1, got 0"),
    case("inspect into a file", "gpt.inspect", "--ckpt", "{ckpt}", "--prompt", "the fox", "--out", "{a_file}",
         expect="report directory {a_file} exists and is a file; choose another --out"),
    # ---- export.web (the failures that come before npm and node are needed) and the old export.serve
    case("web from an ONNX file that does not exist", "export.web", "--onnx", "{nowhere}.onnx", "--out", "{fresh}",
         expect="does not exist; export one with `python -m export.onnx --ckpt out`"),
    case("web from a file that is not ONNX", "export.web", "--onnx", "{garbage_onnx}", "--out", "{fresh}",
         expect="is not a loadable ONNX model (truncated or not ONNX?)"),
    case("web from an ONNX file without our metadata", "export.web", "--onnx", "{foreign_onnx}", "--out", "{fresh}",
         expect="lacks metadata vocab, block_size"),
    case("web into a path that is a file", "export.web", "--onnx", "{garbage_onnx}", "--out", "{a_file}",
         expect="--out {a_file} exists and is not a directory"),
    case("serve a directory without a site", "export.web", "--out", "{nowhere}", "--serve", "--no-build",
         expect="{nowhere} has no index.html; build it with `python -m export.web"),
    case("serve on a port out of range", "export.web", "--out", "{nowhere}", "--serve", "--port", "70000",
         expect="--port must be in [0, 65535], got 70000"),
    case("--no-build without --serve", "export.web", "--no-build", expect="--no-build only makes sense with --serve"),
    case("the old name of the static server", "export.serve", "site",
         expect="`python -m export.serve` is now `python -m export.web --serve`"),
    # ---- bench.quality / bench.recipes (the model-quality check and the recipe search)
    case("quality of a checkpoint that does not exist", "bench.quality", "--ckpt", "{nowhere}", "--data", "{text}",
         expect="does not exist; train one with `python -m gpt.train --out-dir DIR`"),
    case("quality with zero characters", "bench.quality", "--ckpt", "{ckpt}", "--data", "{text}", "--chars", "0",
         expect="--chars must be >= 1, got 0"),
    case("quality with characters not a number", "bench.quality", "--ckpt", "{ckpt}", "--chars", "many",
         expect="argument --chars: invalid int value: 'many' (see `python -m bench.quality --help`)"),
    case("recipes without --out", "bench.recipes", expect="the following arguments are required: --out"),
    case("recipes of an unknown variant", "bench.recipes", "--out", "{fresh}.md", "--only", "sgd",
         expect="argument --only: invalid choice: 'sgd'"),
    case("recipes of zero iterations each", "bench.recipes", "--out", "{fresh}.md", "--iters", "0",
         expect="--iters must be a positive iteration count, got 0"),
    # ---- bench.step_cost (a decode step itemised)
    case("step cost of a file that does not exist", "bench.step_cost", "--onnx", "{nowhere}.onnx",
         expect="bench.step_cost times onnxruntime-genai beside the engine: {nowhere}.onnx does not exist"),
    case("step cost of zero rounds", "bench.step_cost", "--preset", "cpu", "--rounds", "0",
         expect="argument --rounds: must be >= 1, got 0"),
    case("step cost of an unknown preset", "bench.step_cost", "--preset", "huge",
         expect="unknown preset 'huge'; choose one of: cpu, shakespeare, large"),
    case("step cost of a quantized kind of a given file", "bench.step_cost", "--onnx", "{nowhere}.onnx", "--kind",
         "int8", expect="--kind picks among a preset's files: use it with --preset"),
    # ---- bench.scoreboard (every headline figure on this machine)
    case("scoreboard before make demo", "bench.scoreboard", "--ckpt", "{nowhere}",
         expect="{nowhere}/model.onnx is missing: run `make demo`"),
    case("scoreboard of an unknown row", "bench.scoreboard", "--only", "speed",
         expect="--only 'speed': unknown row speed; the rows: demo,"),
    case("a quick scoreboard into bench/results", "bench.scoreboard", "--onnx", "{portable_onnx}", "--data", "{text}",
         "--quick", expect="--quick is a smoke run, not a measurement: give it --out outside bench/results/"),
]


class RunsCode:
    """Pickles to a call of os.system(command): what a crafted meta.pkl would do under pickle.load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def edit_config(ckpt, edit):
    path = ckpt / "config.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_ckpt, periodic_text_file, exported, exported_std) -> dict[str, str]:
    """The fixture files the cases name: copies of the tiny checkpoint with one thing broken in each."""
    root = tmp_path_factory.mktemp("bad")
    p = {"ckpt": tiny_ckpt, "text": periodic_text_file, "nowhere": root / "nowhere", "fresh": root / "fresh",
         "unused": root / "unused"}  # an --out that the rows sharing {fresh} cannot fill meanwhile

    def broken(name, fix):
        d = root / name
        shutil.copytree(tiny_ckpt, d, ignore=shutil.ignore_patterns("*.pt", "*.png", "*.onnx"))
        fix(d)
        p[name] = d

    weights = "model.safetensors"
    broken("no_weights", lambda d: (d / weights).unlink())
    broken("empty_weights", lambda d: (d / weights).write_bytes(b""))
    broken("truncated_weights", lambda d: (d / weights).write_bytes((d / weights).read_bytes()[:5000]))

    def flip(d):
        blob = bytearray((d / weights).read_bytes())
        blob[len(blob) // 2] ^= 0x10
        (d / weights).write_bytes(bytes(blob))

    broken("bitflip_weights", flip)
    broken("no_config", lambda d: (d / "config.json").unlink())
    broken("bad_json", lambda d: (d / "config.json").write_text("{'model': "))
    broken("no_n_head", lambda d: edit_config(d, lambda m: m["model"].pop("n_head")))
    broken("no_vocab", lambda d: edit_config(d, lambda m: m.pop("vocab")))
    broken("string_n_layer", lambda d: edit_config(d, lambda m: m["model"].update(n_layer="two")))
    broken("wide_config", lambda d: edit_config(d, lambda m: m["model"].update(n_embd=64)))
    broken("vocab_size_off", lambda d: edit_config(d, lambda m: m["model"].update(vocab_size=99)))
    broken("future_format", lambda d: edit_config(d, lambda m: m.update(format_version=99)))
    broken("corrupt_state", lambda d: (d / "train_state.pt").write_bytes(b"PK\x03\x04 not a zip at all"))
    broken("evil_state", lambda d: torch.save({"iter": 1, "hook": os.system}, d / "train_state.pt"))  # never called

    nano = prepare_meta(PERIODIC_TEXT)  # 35 characters
    write_files(root / "nano", NanoGPT(GPTConfig(vocab_size=nano["vocab_size"])), nano)
    p["nano"] = root / "nano"
    bpe = NanoGPT(GPTConfig(vocab_size=50304, n_layer=1, n_head=1, n_embd=4))
    write_files(root / "nano_bpe", bpe, prepare_meta(PERIODIC_TEXT + "XYZ#&"))  # and a meta.pkl of 40 characters
    p["nano_bpe"] = root / "nano_bpe"
    p["evil_meta"] = root / "evil.pkl"
    p["evil_meta"].write_bytes(pickle.dumps(RunsCode(f"touch {root / 'pwned'}")))

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(foreign, root / "foreign.onnx")
    p["foreign_onnx"] = root / "foreign.onnx"
    for name, props in (("old_format_onnx", {"format_version": "2"}),
                        ("portable_onnx", {"vocab": json.dumps(list("abc")), "block_size": "8", "n_layer": "1",
                                           "n_head": "1", "n_embd": "4", "val_loss": "null", "layout": "onnx",
                                           "format_version": "3"})):
        del foreign.metadata_props[:]
        onnx.helper.set_model_props(foreign, props)
        onnx.save(foreign, root / f"{name}.onnx")
        p[name] = root / f"{name}.onnx"
    p["truncated_onnx"] = root / "truncated.onnx"
    p["truncated_onnx"].write_bytes(foreign.SerializeToString()[:40])
    p["garbage_onnx"] = root / "garbage.onnx"
    p["garbage_onnx"].write_text("this is not a protobuf\n" * 10)
    p["empty_onnx"] = root / "empty.onnx"
    p["empty_onnx"].write_bytes(b"")
    p["a_file"] = root / "a_file"
    p["a_file"].write_text("I am a file\n")
    p["latin1"] = root / "latin1.txt"
    p["latin1"].write_bytes("abc\xe9t\xe9\n".encode("latin-1") * 100)
    bad = root / "bad_data_dir" / "tinyshakespeare"
    bad.mkdir(parents=True)
    (bad / "input.txt").write_text("not Shakespeare\n")
    p["bad_data_dir"] = bad.parent
    speculative_files(root, exported[0], p)
    p["std_onnx"] = exported_std
    return {k: str(v) for k, v in p.items()}


def speculative_files(root, gqa, p: dict) -> None:
    """The gqa export, and copies of it as a draft with another vocabulary or block size (metadata edited), beside
    an ngram index of another text, and with no index."""
    import onnx

    from gpt.decode.speculative.ngram import INDEX_FILE, NgramIndex

    p["gqa_onnx"] = gqa
    for name, key, change in (("other_vocab_onnx", "vocab", lambda v: json.dumps(json.loads(v)[::-1])),
                              ("other_block_onnx", "block_size", lambda v: "16")):
        proto = onnx.load(gqa)
        for entry in proto.metadata_props:
            if entry.key == key:
                entry.value = change(entry.value)
        onnx.save(proto, root / f"{name}.onnx")
        p[name] = root / f"{name}.onnx"
    for name in ("foreign_index", "unindexed"):
        (root / name).mkdir()
        shutil.copy(gqa, root / name / "model.onnx")
        p[f"{name}_onnx"] = root / name / "model.onnx"
    vocab = json.loads(next(e.value for e in onnx.load(gqa).metadata_props if e.key == "vocab"))
    NgramIndex.build(PERIODIC_TEXT[:1000], vocab, "0" * 64).save(root / "foreign_index" / INDEX_FILE)


def runs_in_process(c: Case) -> bool:
    """A command-line validation row that is not its CLI's first row (that one stays a real subprocess)."""
    first = next(other for other in CASES if other.module == c.module)
    return c is not first and not c.needs_no_cuda and c.expect.startswith(("--", "argument "))


def run_in_process(c: Case, paths: dict) -> subprocess.CompletedProcess:
    """`python -m c.module args`, minus the fresh interpreter: run_cli(main) with stdout/stderr captured; an
    exception run_cli lets through is printed as the interpreter would (a traceback the test then rejects)."""
    module = importlib.import_module(c.module)
    main = getattr(module, "main", None) or importlib.import_module(c.module + ".__main__").main
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(main, [a.format(**paths) for a in c.args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess([c.module, *c.args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def results(paths) -> dict[str, subprocess.CompletedProcess]:
    """Every case's CLI run: the subprocess rows a few at a time (each a fresh interpreter, mostly waiting on
    imports), then the in-process rows one by one."""
    def run(c: Case):
        return run_module(c.module, *(a.format(**paths) for a in c.args), env={"OMP_NUM_THREADS": "1"}, timeout=120)

    separate = [c for c in CASES if not runs_in_process(c)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip((c.id for c in separate), pool.map(run, separate), strict=True))
    return done | {c.id: run_in_process(c, paths) for c in CASES if runs_in_process(c)}


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_line(c: Case, results, paths):
    if c.needs_no_cuda and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = results[c.id]
    assert "Traceback" not in r.stderr, r.stderr
    if not c.expect:
        assert r.returncode == 0 and r.stdout.strip() and r.stderr == "", r.stderr
        return
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert c.expect.format(**paths) in lines[0]


def test_a_malicious_meta_pkl_runs_nothing(results, paths, tmp_path):
    """The refused meta.pkl ran nothing; the same file under plain pickle.load would have (the control)."""
    marker = os.path.join(os.path.dirname(paths["evil_meta"]), "pwned")
    assert results["convert with a meta.pkl that would run code"].returncode == 2 and not os.path.exists(marker)
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({paths['evil_meta']!r}, 'rb'))"],
                   check=True, capture_output=True)
    assert os.path.exists(marker)


def test_debug_shows_the_traceback(paths):
    r = run_module("gpt.sample", "--ckpt", paths["bitflip_weights"], "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "GPTError" in r.stderr


def test_help_still_works():
    r = subprocess.run([sys.executable, "-m", "gpt.data", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m gpt.data") and r.stderr == ""
