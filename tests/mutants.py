"""Mutation testing by hand: `make mutants` (or `python tests/mutants.py [NAME ...]`).

Each mutant below is a deliberate bug: one or more exact replacements in a file. For each, a temporary copy of
the working tree gets the bug and runs the tests that should catch it; a mutant is *killed* when they fail.
A survivor names a guarantee that no test checks. The unmutated copy runs the same tests first: they must pass,
or a kill means nothing. Outside CI (minutes: every mutant runs its tests in a fresh copy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (exact text, its replacement); each text must occur exactly once
    tests: tuple[str, ...]


MUTANTS = [
    Mutant("the sampling head forgets the temperature", "gpt/decode/sampler_graph.py",
           (('        _node("Div", [s + "shifted", TEMPERATURE], s + "scaled"),\n',
             '        _node("Identity", [s + "shifted"], s + "scaled"),\n'),),
           ("tests/test_sampler_graph.py::test_the_head_draws_the_numpy_samplers_tokens",)),
    Mutant("the sampling head draws every position with the last one's draw", "gpt/decode/backends/ort_gqa_decoder.py",
           (("        b.uniform[0, :, 0] = uniform\n", "        b.uniform[0, :, 0] = uniform[-1]\n"),),
           ("tests/test_sampler_graph.py::test_a_verify_run_samples_after_every_position",)),
    Mutant("the loop's in-graph step draws once for every row", "gpt/decode/loop.py",
           (("sampler.uniforms.draw(num_samples))", "sampler.uniforms.draw(1))"),),
           ("tests/test_sampler_graph.py::test_sampled_text_is_the_numpy_samplers_across_a_re_prefill",)),
    Mutant("the distilled drafter drafts the table's argmax", "gpt/decode/speculative/distilled.py",
           (("            token = int(sample_tokens(row[None].astype(np.float64), *settings, "
             "uniforms[len(out):len(out) + 1])[0])\n",
             "            token = int(np.argmax(row))\n"),),
           ("tests/test_speculative.py::test_the_distilled_table_holds_the_models_mean_distribution_after_each_context",)),
    Mutant("a refill of draws drops the ones not yet taken", "gpt/decode/sampler.py",
           (("            self.buffer = np.concatenate([self.buffer[self.at:], self.rng.random(max(n, self.BLOCK))])\n",
             "            self.buffer = self.rng.random(max(n, self.BLOCK))\n"),),
           ("tests/test_sampler.py::test_draws_are_the_generators_own_in_order_whatever_the_peeks",)),
    Mutant("each habit's head is taken from the last layer", "gpt/inspect/analysis.py",
           (("        best = int(weights.nan_to_num(-1.0).flatten().argmax())\n"
             "        layer, head = divmod(best, habits.size(1))\n",
             "        layer, head = habits.size(0) - 1, int(weights[-1].nan_to_num(-1.0).argmax())\n"),),
           ("tests/test_inspect.py::test_each_habit_is_named_from_the_layer_it_lives_in",)),
    Mutant("a generated block is never stale", "docsgen/generated.py",
           (("    return [b.spec for b in blocks(text) if b.body.strip() != render(b.spec, page)]\n",
             "    return []\n"),),
           ("tests/test_docs.py::test_a_stale_block_is_found_and_rewritten",)),
    Mutant("resume forgets the torch RNG", "gpt/train/state.py",
           (('    torch.set_rng_state(state["torch"])\n', "    pass\n"),),
           ("tests/test_reliability.py::test_stop_after_then_resume_is_bit_identical",)),
    Mutant("a save writes in place", "gpt/fsutil.py",
           (('        with os.fdopen(fd, "wb") as f:\n',
             '        os.close(fd)\n        with open(path, "wb") as f:\n'),),
           ("tests/test_reliability.py::test_atomic_write_leaves_the_target_intact_when_the_write_fails",)),
    Mutant("the no-cache decoder keeps its last 8 tokens", "gpt/decode/backends/torch_decoder.py",
           (("self.window = torch.cat([self.window, x], dim=1)\n",
             "self.window = torch.cat([self.window, x], dim=1)[:, -8:]\n"),),
           ("tests/test_model.py::test_every_decode_step_matches_recompute_across_re_prefills",)),
    Mutant("the cache mask sees one position ahead", "gpt/model/kv_cache.py",
           (("return k_all, v_all, self.visible[input_pos]\n",
             "return k_all, v_all, self.visible[(input_pos + 1).clamp(max=self.visible.size(0) - 1)]\n"),),
           ("tests/test_model.py::test_kv_cache_equals_full_recompute",)),
    Mutant("the ONNX decoder's step drops its oldest cached position", "gpt/decode/backends/ort_decoder.py",
           (("return np.array(self._run(ids, self.past)[:, -1], dtype=np.float32)",
             "return np.array(self._run(ids, [p[:, :, 1:] for p in self.past])[:, -1], dtype=np.float32)"),),
           ("tests/test_export.py::test_every_decode_step_matches_torch_recompute_across_re_prefills",)),
    Mutant("the Triton backend attends over the whole static cache buffer", "gpt/model/attention.py",
           (("            end = int(mask[-1].sum())\n", "            end = k.size(2)\n"),),
           ("tests/test_kernels.py::test_triton_attention_with_a_kv_cache_matches_recompute_every_step",)),
    Mutant("gpt.sample --compile runs eagerly", "gpt/sample.py",
           (("use_cache=not args.no_cache, compile=args.compile)", "use_cache=not args.no_cache, compile=False)"),),
           ("tests/test_sample_cli.py::test_sample_compile_prints_the_eager_text",)),
    Mutant("a top-p mask not mapped back to its tokens", "gpt/decode/sampler.py",
           (("        np.put_along_axis(drop, order, drop_sorted, axis=-1)\n", "        drop = drop_sorted\n"),),
           ("tests/test_sampler.py::test_top_p_and_top_k_follow_each_token_not_its_index",)),
    Mutant("the parity gate compares nothing", "export/verify.py",
           (("prefill_diff = float(np.abs(decoder.logits(ids) - ref.numpy()).max())", "prefill_diff = 0.0"),
            ("decode_diff = max(decode_diff, float(np.abs(got - ref[:, -1].numpy()).max()))", "decode_diff = 0.0")),
           ("tests/test_export.py::test_the_real_parity_gate_catches_a_model_that_disagrees",)),
    Mutant("a resume forgets the time budget's plan", "gpt/train/state.py",
           (('    plan = dict(state.get("time_budget") or {})\n', "    plan = {}\n"),),
           ("tests/test_time_budget.py::test_a_budget_run_saves_its_plan_and_a_resume_finishes_it",)),
    Mutant("the budget leaves out evaluation time", "gpt/train/budget.py",
           (("    per_iter = step_s + eval_s / eval_interval\n", "    per_iter = step_s\n"),),
           ("tests/test_time_budget.py::test_time_budget_arithmetic",)),
    Mutant("the dtype probe consumes the run's random numbers", "gpt/train/precision.py",
           (("    torch.set_rng_state(rng)\n", "    pass\n"),),
           ("tests/test_train.py::test_the_probe_leaves_the_run_as_it_was",)),
    Mutant("Muon's state is not restored on resume", "gpt/train/optim.py",
           (("            opt.load_state_dict(state)\n", "            pass\n"),),
           ("tests/test_reliability.py::test_muon_resume_is_bit_identical_and_needs_the_same_optimizer",)),
    Mutant("Muon also takes the embeddings", "gpt/train/optim.py",
           (("[p for p in model.h.parameters() if p.dim() == 2]", "[p for p in model.parameters() if p.dim() == 2]"),),
           ("tests/test_train.py::test_muon_takes_the_hidden_matrices_and_adamw_the_rest",)),
    Mutant("Muon's step without AdamW's scale", "gpt/train/muon.py",
           (('alpha=-group["lr"] * 0.2 * math.sqrt(max(p.shape))', 'alpha=-group["lr"]'),),
           ("tests/test_train.py::test_our_muon_is_torchs_muon_and_runs_in_float32_too",)),
    Mutant("the final val loss is the estimate", "gpt/train/loop.py",
           (("    val = full_loss(best, val_data, block, device)\n", '    val = manifest["val_loss"]\n'),),
           ("tests/test_train.py::test_the_reported_val_loss_is_an_independent_full_pass",)),
    Mutant("the full pass skips the last, shorter window", "gpt/data.py",
           (("    if len(data) - 1 > n * block_size:\n", "    if False:\n"),),
           ("tests/test_train.py::test_the_reported_val_loss_is_an_independent_full_pass",)),
    Mutant("a non-finite gradient norm goes unnoticed", "gpt/train/loop.py",
           (("[*losses, grad_norm.to(losses[0])]", "losses"),),
           ("tests/test_train.py::test_a_non_finite_loss_or_gradient_norm_stops_training",)),
    Mutant("every evaluation saves the checkpoint, better or not", "gpt/train/loop.py",
           (('    if losses["val"] < r.best_val:\n        r.best_val = losses["val"]\n',
             '    r.best_val = min(r.best_val, losses["val"])\n    if True:\n'),),
           ("tests/test_best_val.py::test_out_holds_the_best_evaluation_and_resume_keeps_it",)),
    Mutant("a resume forgets the best val loss so far", "gpt/train/state.py",
           (('start_iter, best_val = int(state["iter"]), float(state["best_val"])',
             'start_iter, best_val = int(state["iter"]), float("inf")'),),
           ("tests/test_best_val.py::test_out_holds_the_best_evaluation_and_resume_keeps_it",)),
    Mutant("the final full pass saves the latest weights under the best's name", "gpt/train/loop.py",
           (("        finish(r.out_dir, r.val_data, r.model.config.block_size, r.o.device, r.tokenizer)\n",
             "        finish(r.out_dir, r.val_data, r.model.config.block_size, r.o.device, r.tokenizer, r.model)\n"),
            ("tokenizer: CharTokenizer) -> None:", "tokenizer: CharTokenizer, last=None) -> None:"),
            ("    best, _, manifest = load_checkpoint(out_dir, device=device)\n",
             "    _, _, manifest = load_checkpoint(out_dir, device=device)\n    best = last\n")),
           ("tests/test_best_val.py::test_out_holds_the_best_evaluation_and_resume_keeps_it",)),
    Mutant("an explicit --max_iters leaves the preset's time budget on", "gpt/train/options.py",
           (('budget = args.time_budget or (None if "max_iters" in overrides else preset.time_budget)',
             "budget = args.time_budget or preset.time_budget"),),
           ("tests/test_time_budget.py::test_an_explicit_max_iters_turns_the_preset_budget_off_and_caps_a_given_one",)),
    Mutant("the time budget re-plans only at evaluations", "gpt/train/budget.py",
           (("        if done % REPLAN_EVERY:\n", "        if done % self.t.eval_interval and self.planned:\n"),),
           ("tests/test_time_budget.py::test_a_budget_is_a_deadline_whatever_the_load",)),
    Mutant("the pace is the mean since the start", "gpt/train/budget.py",
           (("self.window_total - self.window[0] >= self.window_s:", "False:"),),
           ("tests/test_time_budget.py::test_the_pace_is_the_recent_past_so_the_plan_grows_back_after_a_busy_spell",)),
    Mutant("an evaluation runs whatever time is left", "gpt/train/budget.py",
           (("        return self.left(now) >= (1 + self.final_evals) * self.eval_s(pace)\n",
             "        return True\n"),),
           ("tests/test_time_budget.py::test_an_evaluation_is_counted_in_steps_and_never_eats_the_final_ones_time",)),
    Mutant("gradient clipping silently off", "gpt/train/loop.py",
           (("clip_grad_norm_(s.model.parameters(), s.clip)", "clip_grad_norm_(s.model.parameters(), math.inf)"),),
           ("tests/test_time_budget.py::test_gradient_clipping_bounds_the_step_a_huge_loss_takes",)),
    Mutant("the probe times one precision after the other", "gpt/train/precision.py",
           (("    for r in range(rounds + 1):\n        for fn, seen in zip(candidates, times, strict=True):\n",
             "    for fn, seen in zip(candidates, times, strict=True):\n        for r in range(rounds + 1):\n"),),
           ("tests/test_train.py::test_the_probe_takes_turns_so_a_busy_spell_touches_both_precisions",)),
    Mutant("the precision check never switches", "gpt/train/precision.py",
           (("        self.dtype, self.recheck = result[0], None\n", "        self.recheck = None\n"),),
           ("tests/test_time_budget.py::test_the_precision_is_checked_again_on_the_runs_own_steps",)),
    Mutant("a time budget ignores the --max_iters cap", "gpt/train/budget.py",
           (("return min(planned, self.cap) if self.cap else planned", "return planned"),),
           ("tests/test_time_budget.py::test_an_explicit_max_iters_turns_the_preset_budget_off_and_caps_a_given_one",)),
    Mutant("a resume probes the dtype again", "gpt/train/loop.py",
           (("    dtype = o.dtype or DTYPES.get(saved)\n", "    dtype = o.dtype\n"),),
           ("tests/test_train.py::test_a_resume_keeps_the_dtype_auto_chose_without_probing_again",)),
    Mutant("the naive attention scales its scores by 1/d, not 1/sqrt(d)", "gpt/model/attention.py",
           (("scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))",
             "scores = (q @ k.transpose(-2, -1)) * (1.0 / q.size(-1))"),),
           ("tests/test_model.py::test_attention_backends_compute_the_same_function",)),
    Mutant("the onnxruntime sampler imports torch", "gpt/decode/backends/ort_session.py",
           (("import onnxruntime as ort\n", "import onnxruntime as ort\nimport torch  # noqa: F401\n"),),
           ("tests/test_export.py::test_onnxruntime_sampler_runs_with_torch_unimportable",)),
    Mutant("the engine's decode step gives every row the longest row's length", "gpt/engine/runner.py",
           (("        np.less_equal(self.positions[:total], lengths[:, None], out=mask)\n",
             "        mask[:] = 1\n"),),
           ("tests/test_engine.py::test_each_greedy_text_equals_gpt_sample_whatever_shares_the_batch",)),
    Mutant("a cancelled request keeps its slot", "gpt/engine/request.py",
           (("        return self.cancelled or (self.deadline is not None and now > self.deadline)\n",
             "        return self.deadline is not None and now > self.deadline\n"),),
           ("tests/test_engine.py::test_cancel_frees_the_slot_within_one_step",)),
    Mutant("a stream ignores --stream-interval", "gpt/serve/app.py",
           (("    if interval and sent:", "    if False:"),),
           ("tests/test_serve.py::test_a_stream_interval_sends_fewer_chunks_and_the_same_text",)),
    Mutant("the cluster's /metrics drops the replica label", "gpt/serve/ray_app.py",
           (('{**s.labels, "replica": replica}', "s.labels"),),
           ("tests/test_ray_serve.py::test_health_lists_every_replica_and_metrics_label_them",)),
    Mutant("gpt.serve --ray shuts Ray down on SIGTERM without draining", "gpt/serve/__main__.py",
           (('        drain("gpt", args.drain_timeout)\n', ""),),
           ("tests/test_ray_serve.py::test_sigterm_lets_the_streams_in_flight_finish_then_the_cli_exits_0",)),
    Mutant("Ray's proxy leaves a stream its replica died in unended", "gpt/serve/ray_proxy.py",
           (('if seen["event_stream"] and not seen["ended"]:', "if False:"),),
           ("tests/test_ray_proxy.py",
            "tests/test_ray_serve.py::test_a_killed_replica_fails_only_its_own_streams_and_ray_replaces_it")),
    Mutant("Ray starts without the proxy middleware", "gpt/serve/ray_app.py",
           (('ray.init(**options, runtime_env={"env_vars": PROXY_ENV})', "ray.init(**options)"),),
           ("tests/test_ray_serve.py::test_a_killed_replica_fails_only_its_own_streams_and_ray_replaces_it",)),
    Mutant("DDP's setup imports torch.distributed.nn.functional after init_process_group", "gpt/train/distributed.py",
           (("    import torch.distributed.nn.functional as _  # noqa: F401\n", ""),),
           ("tests/test_reliability.py::test_teardown_stops_the_gloo_threads_so_no_rank_aborts_at_exit",)),
    Mutant("teardown leaves DDP's reference cycle to the garbage collector", "gpt/train/distributed.py",
           (("            gc.collect()\n", ""),),
           ("tests/test_reliability.py::test_teardown_stops_the_gloo_threads_so_no_rank_aborts_at_exit",)),
    Mutant("the engine's slots ignore the request's seed", "gpt/engine/core.py",
           (("        if p.seed is None:  # a fresh seed for each request\n", "        if True:\n"),),
           ("tests/test_engine.py::test_a_seeded_sampled_request_is_the_same_alone_and_under_load",
            "tests/test_serve.py::test_a_seed_gives_its_text_and_each_of_n_choices_its_own")),
    Mutant("an evaluation reseeds the torch RNG that training's dropout draws from", "gpt/train/losses.py",
           (("    model.eval()\n    out = {}\n", "    model.eval()\n    torch.manual_seed(seed)\n    out = {}\n"),),
           ("tests/test_train.py::test_evaluations_do_not_change_what_training_draws",)),
    Mutant("the schedule does not follow the time budget's plan", "gpt/train/budget.py",
           (("            self.progress.advance(it, self.max_iters, self.t.warmup_iters)\n",
             "            self.progress.advance(it, self.t.max_iters, self.t.warmup_iters)\n"),),
           ("tests/test_time_budget.py::test_a_budget_run_saves_its_plan_and_a_resume_finishes_it",)),
    Mutant("accumulation steps that do not split over the processes are trained anyway", "gpt/train/loop.py",
           (("    if t.gradient_accumulation_steps % dist.world:\n", "    if False:\n"),),
           ("tests/test_train.py::test_a_global_batch_the_processes_cannot_share_is_refused",)),
    Mutant("an atomic write renames before its data is on disk", "gpt/fsutil.py",
           (("            os.fsync(f.fileno())\n", ""),),
           ("tests/test_reliability.py::test_a_write_reaches_the_disk_before_its_rename_and_the_rename_after_it",)),
    Mutant("an atomic write leaves its rename unsynced in the directory", "gpt/fsutil.py",
           (("    fsync_dir(path.parent)\n", ""),),
           ("tests/test_reliability.py::test_a_write_reaches_the_disk_before_its_rename_and_the_rename_after_it",)),
    Mutant("speculative: a draft is kept where it is the model's argmax, even when sampling",
           "gpt/decode/speculative/loop.py",
           (("    agree = tokens[:len(draft)] == np.asarray(draft, dtype=np.int64)\n",
             "    agree = np.argmax(rows[:len(draft)], axis=-1) == np.asarray(draft, dtype=np.int64)\n"),),
           ("tests/test_speculative.py::test_the_text_is_plain_decodings_past_block_size",
            "tests/test_speculative.py::test_sampled_text_has_exactly_the_models_distribution")),
    Mutant("speculative: the draws of rejected drafts are spent", "gpt/decode/speculative/loop.py",
           (("        uniforms.take(n + 1)\n", "        uniforms.take(len(draft) + 1)\n"),),
           ("tests/test_speculative.py::test_the_text_is_plain_decodings_past_block_size",)),
    Mutant("speculative: drafts may run one position past the window", "gpt/decode/speculative/loop.py",
           (("room = pacer.drafts(min(draft_tokens, block - len(window), max_new_tokens - len(out) - 1))",
             "room = pacer.drafts(min(draft_tokens, block - len(window) + 1, max_new_tokens - len(out) - 1))"),),
           ("tests/test_speculative.py::test_the_text_is_plain_decodings_past_block_size",)),
    Mutant("the engine counts an accepted draft twice in its cache", "gpt/engine/core.py",
           (("                return\n            slot.cached += 1\n",
             "                return\n            slot.cached += 2\n"),),
           ("tests/test_speculative.py::test_the_engine_speculating_writes_the_text_it_writes_without",)),
    Mutant("an ngram index of another training text is used", "gpt/decode/speculative/ngram.py",
           (("        if data_sha256 and index.text_sha256 != data_sha256:\n",
             "        if False:\n"),),
           ("tests/test_speculative.py::test_ngram_index_round_trips_and_is_checked",)),
    Mutant("gpt.serve leaves onnxruntime's workers spinning", "gpt/serve/__main__.py",
           (("    spin_workers(args.spin)  # the HTTP side and the clients share these cores\n", ""),),
           ("tests/test_serve.py::test_the_servers_onnxruntime_workers_sleep_between_ops_unless_told_to_spin",)),
    Mutant("batch 1 draws a token early on a step of the CDF", "gpt/decode/sampler.py",
           (("    sampled = int((cdf <= float(", "    sampled = int((cdf < float("),),
           ("tests/test_sampler.py::test_a_single_row_draws_the_same_token_as_in_a_batch",)),
    Mutant("the engine imports the torch model", "gpt/engine/core.py",
           (("from gpt.decode.loop import",
             "from gpt.model.kv_cache import *  # noqa: F403\nfrom gpt.decode.loop import"),),
           ("tests/test_layout.py",)),
]


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored), with data/ linked in."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    if (ROOT / "data").exists():
        (dest / "data").symlink_to(ROOT / "data")


def apply(m: Mutant, tree: Path) -> None:
    path = tree / m.file
    text = path.read_text()
    for old, new in m.edits:
        if text.count(old) != 1:
            raise SystemExit(f"mutant {m.name!r}: {old!r} occurs {text.count(old)} times in {m.file}, not once")
        text = text.replace(old, new)
    path.write_text(text)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, float]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=tree,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)}, timeout=900)
    return r.returncode, time.perf_counter() - start


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    if names and len(chosen) != len(names):
        raise SystemExit(f"unknown mutant(s); choose from: {', '.join(repr(m.name) for m in MUTANTS)}")
    tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean"
        copy_tree(clean)
        code, seconds = run_tests(clean, tests)
        if code:
            raise SystemExit(f"the unmutated tests fail (exit {code}): fix them before counting mutants")
        print(f"unmutated: {len(tests)} tests pass ({seconds:.0f} s)\n\n| mutant | file | result |\n|---|---|---|")
        killed = 0
        for i, m in enumerate(chosen):
            tree = Path(tmp) / f"mutant-{i}"
            copy_tree(tree)
            apply(m, tree)
            code, seconds = run_tests(tree, m.tests)
            killed += code == 1
            result = {0: "**survived**", 1: "killed"}.get(code, f"error (pytest exit {code})")
            print(f"| {m.name} | {m.file} | {result} ({seconds:.0f} s) |", flush=True)
            shutil.rmtree(tree)
    print(f"\nscore: {killed} of {len(chosen)} mutants killed")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
