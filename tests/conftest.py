import os
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parent.parent


def _data_dir() -> Path:
    env = os.environ.get("RNN_JAX_DATA_DIR")
    return (Path(env) if env else REPO.parent / "shared" / "data").resolve()  # tests may run from other folders


DATA_DIR = _data_dir()
TIME_MACHINE = DATA_DIR / "timemachine.txt"
WAR_OF_THE_WORLDS = DATA_DIR / "war_of_the_worlds.txt"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not TIME_MACHINE.is_file():
        pytest.fail(
            f"the tests read the corpus from {DATA_DIR}; set RNN_JAX_DATA_DIR to a directory holding timemachine.txt"
        )
    return DATA_DIR


@pytest.fixture(autouse=True)
def test_log(tmp_path_factory, monkeypatch) -> Path:
    """Every test writes its test-part scorings to a log of its own, never to the repository's."""
    path = tmp_path_factory.mktemp("log") / "test_log.jsonl"
    monkeypatch.setenv("RNN_JAX_TEST_LOG", str(path))
    return path


@pytest.fixture
def key():
    return jax.random.key(0)


# Tests that take seconds each (training real models, subprocesses, fault injection): marked slow here, so that
# `make test-fast` (pytest -m "not slow") leaves them out; `make test` runs them all.
SLOW = {
    "test_scored.py": ("test_two_processes_never_score_the_same_test_part_twice",),
    "test_baselines.py": (
        "test_modified_kneser_ney_matches_the_reference_and_is_normalised",
        "test_ngram_matches_a_direct_dict_implementation_of_kneser_ney",
    ),
    "test_bench.py": (
        "test_cli_smoke_run_of_the_cheap_sections",
        "test_device_scaling_over_four_host_devices",
        "test_matmul_limit_counts_two_flop_per_multiply_add",
        "test_matmul_limit_of_a_cell_counts_its_recurrent_products",
        "test_pinned_worker_process_runs_on_the_cpus_it_was_given",
        "test_the_recipe_section_times_both_dtypes_beside_the_torch_peer",
    ),
    "test_cells.py": (
        "test_epoch_scan_carries_or_resets_the_pytree_state_like_a_loop_of_steps",
        "test_fused_recurrences_in_row_chains_give_the_same_loss_and_gradients_bit_for_bit",
        "test_the_automatic_split_and_an_explicit_one",
        "test_toy_gradients_reach_both_state_arrays",
        "test_toy_run_checkpoints_resumes_exactly_generates_and_evaluates",
        "test_toy_state_under_data_parallelism",
        "test_toy_unroll_equals_a_python_loop_and_both_forwards_agree",
    ),
    "test_checkpoint.py": (
        "test_a_partly_written_checkpoint_is_ignored",
        "test_a_scheduled_run_resumes_only_to_its_own_length",
        "test_killed_runs_resume_bit_identically",
        "test_resume_extends_a_finished_run",
        "test_sigterm_writes_a_checkpoint_and_says_how_to_resume",
        "test_skip_mode_counts_skips_and_stops_after_too_many",
        "test_stop_mode_writes_no_nonfinite_checkpoint",
    ),
    "test_distributed.py": (
        "test_four_devices_train_like_one_and_resume_on_one",
        "test_indivisible_batch_is_refused",
        "test_two_processes_of_two_devices_match_one_process_of_four",
        "test_vmapped_seeds_shard_over_devices",
    ),
    "test_evaluate.py": (
        "test_without_a_validation_part_the_text_after_the_trained_prefix_is_scored",
        "test_best_needs_a_validation_run",
        "test_cli_on_another_book_reports_unknown_characters",
        "test_cli_reports_dynamic_beside_static",
        "test_evaluation_is_one_stream_with_the_state_carried",
        "test_validation_is_logged_and_beats_the_unigram",
    ),
    "test_experiments.py": (
        "test_every_experiment_trains_a_few_steps",
        "test_run_seeds_writes_a_record_per_seed",
        "test_heldout_scores_both_protocols_and_logs_every_test_scoring",
    ),
    "test_faults.py": (
        "test_a_kill_between_the_checkpoint_and_best_is_completed_on_resume",
        "test_a_run_that_died_before_its_first_checkpoint_does_not_block_the_same_command",
        "test_init_from_resumed_before_its_first_checkpoint_starts_from_the_recorded_parameters",
        "test_sighup_stops_a_run_after_its_epoch_like_sigterm",
        "test_a_finished_chain_stage_refuses_other_flags_with_the_difference",
        "test_an_empty_predict_prefix_is_refused_up_front_and_an_old_one_does_not_break_a_resume",
        "test_sigint_while_importing_is_one_line",
        "test_a_checkpoint_that_cannot_be_written_is_one_line",
        "test_a_file_size_limit_fails_cleanly_and_keeps_earlier_checkpoints",
        "test_a_huge_finite_loss_is_divergence",
        "test_a_kill_in_the_middle_of_a_rewrite_loses_nothing",
        "test_a_peer_that_never_joins_is_one_line",
        "test_sigint_while_starting_and_compiling_ends_cleanly",
        "test_the_best_checkpoint_survives_every_resume",
    ),
    "test_gated.py": (
        "test_a_two_layer_stack_equals_two_one_layer_unrolls_chained",
        "test_hand_written_backward_equals_autodiff",
        "test_init_follows_the_book",
        "test_killed_stacked_lstm_run_resumes_bit_identically_generates_and_evaluates",
        "test_layer_dropout_masks_only_between_layers_and_only_in_training",
        "test_lstm_equals_flax_lstmcell",
        "test_unrolls_equal_a_python_loop_over_the_books_equations",
    ),
    "test_generate.py": (
        "test_cli_greedy_equals_what_training_printed",
        "test_cli_samples_one_per_line_reproducibly",
        "test_greedy_prediction_on_a_model_with_known_choices",
        "test_huge_temperature_is_uniform_and_still_never_unk",
        "test_low_temperature_equals_greedy",
        "test_predict_and_the_books_loop_agree_on_unknown_prefix_characters",
        "test_sampling_is_reproducible_by_key_and_batched",
        "test_scan_generation_equals_the_books_per_character_loop",
        "test_top_k_keeps_exactly_k_candidates_when_logits_tie",
        "test_top_k_never_leaves_the_top_k",
        "test_warm_up_uses_the_prefix_state",
    ),
    "test_heldout.py": (
        "test_changing_later_text_never_changes_earlier_scores",
        "test_dynamic_scores_each_segment_before_training_on_it",
        "test_dynamic_with_no_step_is_static_evaluation",
    ),
    "test_init_from.py": (
        "test_a_skipped_update_restarts_the_carried_state_in_step_and_epoch_alike",
        "test_bf16_backwards_differ_so_the_refusal_is_needed",
        "test_book_random_chain_continues_the_sequential_model_with_resets",
        "test_init_from_starts_from_the_source_parameters_with_a_fresh_optimizer",
        "test_predictions_use_the_texts_own_opening_words_or_the_given_prompts",
        "test_reset_state_zeroes_every_minibatch_of_sequential_windows",
        "test_resume_refuses_another_backward_with_bfloat16",
    ),
    "test_modern_cells.py": (
        "test_a_run_resumes_exactly_and_generates",
        "test_a_short_training_run_lowers_the_loss",
        "test_greedy_generation_is_the_argmax_of_the_training_forward",
        "test_the_model_forwards_agree_and_carry_the_state",
    ),
    "test_model.py": (
        "test_bfloat16_matmuls_stay_close_to_float32",
        "test_cell_equals_flax_simple_cell",
        "test_changing_later_tokens_leaves_earlier_logits_bit_exact",
        "test_chunked_unroll_with_carried_state_equals_one_pass",
        "test_fused_forward_and_gradients_equal_autodiff",
        "test_init_follows_the_book",
        "test_one_hot_times_W_xh_is_the_row_gather",
        "test_outputs_are_causal",
        "test_scan_equals_a_python_loop_over_the_cell",
        "test_shapes_and_finiteness",
    ),
    "test_faults_experiments.py": (
        "test_a_failing_training_process_is_one_error_line",
        "test_a_run_directory_another_process_holds_is_never_removed",
        "test_a_signal_reaches_the_training_processes_and_running_again_continues",
        "test_a_smoke_run_never_replaces_the_committed_record",
    ),
    "test_reproduction.py": (
        "test_full_book_reproduction",
        "test_the_first_epochs_give_the_recorded_perplexities",
    ),
    "test_shakespeare.py": (
        "test_the_benchmark_script_runs_end_to_end",
        "test_the_experiment_trains_on_its_own_corpus_every_character_kept",
    ),
    "test_stack_layout.py": ("test_runs_saved_one_array_per_layer_are_read_converted_and_not_resumed",),
    "test_sweep.py": (
        "test_a_diverging_seed_is_recorded_not_averaged",
        "test_each_vmapped_seed_draws_its_own_dropout_masks",
        "test_processes_mode_equals_separate_runs",
        "test_vmap_mode_equals_separate_runs",
        "test_vmap_mode_follows_the_schedule_like_a_single_run",
    ),
    "test_step.py": (
        "test_clipping_matches_the_global_norm_formula",
        "test_cpu_compiler_options_change_no_number",
        "test_dropout_changes_training_only_and_is_reproducible",
        "test_dropout_mask_keeps_the_expected_fraction_scaled",
        "test_epoch_scan_equals_a_loop_of_train_steps",
        "test_fused_and_autodiff_training_agree",
        "test_huge_clip_norm_steps_exactly_like_no_clipping",
        "test_nonfinite_update_is_not_applied",
        "test_sequential_carries_state_and_random_resets_it",
        "test_tiny_model_overfits_a_tiny_corpus",
        "test_undetached_gradient_reaches_earlier_minibatches",
        "test_dropout_masks_per_step_or_per_sequence",
        "test_the_schedule_scales_the_whole_update",
        "test_weight_decay_is_decoupled_and_spares_biases",
        "test_weight_drop_zeroes_recurrent_weights_only_and_their_gradient",
    ),
    "test_testlog.py": (
        "test_concurrent_writers_each_write_whole_lines",
        "test_a_writer_waits_for_the_lock_another_process_holds",
    ),
    "test_train.py": (
        "test_cli_writes_the_run_directory",
        "test_divergence_stops_with_the_epoch_and_step",
        "test_loss_at_initialisation_is_close_to_ln_vocab",
        "test_same_seed_same_numbers_other_seed_other_numbers",
        "test_short_real_run_beats_the_unigram_level",
    ),
}


# Module-scoped fixtures that train a run: every test that uses one is slow too.
SLOW_FIXTURES = {
    "test_checkpoint.py": {"finished"},
    "test_distributed.py": {"one_device", "four_devices"},
    "test_evaluate.py": {"run"},
    "test_faults.py": {"finished"},
    "test_generate.py": {"run_dir"},
    "test_init_from.py": {"source"},
    "test_shakespeare.py": {"run"},
    "test_stack_layout.py": {"stacked_run"},
    "test_sweep.py": {"separate"},
    "test_tensorboard.py": {"plain", "resumed"},
}


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        help="also run the tests marked full: the book's whole runs, minutes each (make reproduce)",
    )


def pytest_collection_modifyitems(config, items):
    skip_full = pytest.mark.skip(reason="the book's whole run, minutes: run it with --full (make reproduce)")
    for item in items:
        if item.get_closest_marker("full") and not config.getoption("full"):
            item.add_marker(skip_full)
        module = item.path.name
        if getattr(item, "originalname", item.name) in SLOW.get(module, ()) or SLOW_FIXTURES.get(module, set()) & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.slow)
