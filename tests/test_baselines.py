import collections
import math

import numpy as np
import pytest

from rnn_jax import baselines as b
from rnn_jax import data


@pytest.fixture(scope="module")
def split(data_dir):
    ids, vocab = data.load_corpus(data_dir / "timemachine.txt")
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:], len(vocab)


def kn_reference(ids, V, n, context, w, fixed_d=None, modified=False):
    """Interpolated Kneser-Ney written straight from Chen & Goodman's recursion, with dicts, to check the tables;
    modified: their modified KN, D1, D2, D3+ by count from the order's count-of-counts n1..n4."""
    ids = tuple(int(i) for i in ids)

    def counts(k, top):
        grams = [ids[i : i + k] for i in range(len(ids) - k + 1)]
        if top:
            return collections.Counter(grams)
        left = collections.Counter(g[1:] for g in set(ids[i : i + k + 1] for i in range(len(ids) - k)))
        left[ids[:k]] += 1  # the start of the text is one more left neighbour
        return left

    def p(h, top):
        c = counts(len(h) + 1, top)
        lower = 1 / V if not h else p(h[1:], False)
        following = {g: x for g, x in c.items() if g[:-1] == h}
        if not following:
            return lower
        n1, n2, n3, n4 = (sum(x == k for x in c.values()) for k in (1, 2, 3, 4))
        d = fixed_d if fixed_d is not None else n1 / (n1 + 2 * n2) if n1 else 0.5
        total = sum(following.values())
        if modified:
            y = n1 / (n1 + 2 * n2) if n1 else 0
            ds = (
                {1: 1 - 2 * y * n2 / n1, 2: 2 - 3 * y * n3 / n2, 3: 3 - 4 * y * n4 / n3}
                if min(n1, n2, n3, n4)
                else {1: d, 2: d, 3: d}
            )  # a missing count-of-count: Ney's one discount
            dc = lambda x: ds[min(x, 3)] if x else 0.0
            gamma = sum(dc(x) for x in following.values()) / total
            return max(c[h + (w,)] - dc(c[h + (w,)]), 0) / total + gamma * lower
        return max(c[h + (w,)] - d, 0) / total + d * len(following) / total * lower

    h = tuple(int(i) for i in context)[max(0, len(context) - (n - 1)) :]
    return p(h, top=len(h) == n - 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_ngram_is_a_proper_distribution_for_seen_and_unseen_contexts(split, n):
    train, _, V = split
    model = b.fit_ngram(train, V, n)
    for table in model.probs:  # every seen context, every order
        np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert table.min() > 0
    seen = [train[:4], train[1000:1004], train[-4:]]
    unseen = [np.array([26, 26, 26, 26]), np.array([0, 0, 0, 0]), np.array([27, 0, 25, 1]), np.array([], np.int32)]
    for context in seen + unseen:
        p = b.next_probs(model, context)
        assert p.shape == (V,) and p.min() > 0
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_matches_a_direct_dict_implementation_of_kneser_ney(split, n):
    train, _, V = split
    text = train[:3000]
    model = b.fit_ngram(text, V, n)
    contexts = [text[100:103], text[:1], np.array([], np.int32), np.array([9, 2, 26]), np.array([0, 1, 2])]
    for context in contexts:
        want = [kn_reference(text, V, n, context, w) for w in range(V)]
        np.testing.assert_allclose(b.next_probs(model, context), want, rtol=1e-12)


@pytest.mark.parametrize("n,d", [(2, 0.8), (3, 1.0), (4, 0.6)])
def test_ngram_with_one_fixed_discount_matches_the_reference(split, n, d):
    train, _, V = split
    text = train[:3000]
    model = b.fit_ngram(text, V, n, discount_d=d)
    for context in (text[100:103], np.array([9, 2, 26]), np.array([], np.int32)):
        want = [kn_reference(text, V, n, context, w, fixed_d=d) for w in range(V)]
        np.testing.assert_allclose(b.next_probs(model, context), want, rtol=1e-12)
    with pytest.raises(ValueError, match="discount"):
        b.fit_ngram(text, V, n, discount_d=0.0)


def test_select_ngram_picks_the_lowest_validation_loss(split):
    train, held_out, V = split
    val = held_out[:3000]
    best, rows = b.select_ngram(train, val, V, [3, 5], [None, 0.7, 1.0], context=train)
    assert [(r["n"], r["discount"]) for r in rows] == [(n, d) for n in (3, 5) for d in (None, 0.7, 1.0)]
    for r in rows:
        want = b.cross_entropy(b.fit_ngram(train, V, r["n"], r["discount"]), val, context=train)
        assert r["loss"] == pytest.approx(want, rel=1e-12)
    assert best == min(rows, key=lambda r: r["loss"]) and best["n"] == 5


def test_uniform_perplexity_is_exactly_the_vocabulary_size(split):
    train, held_out, V = split
    assert b.evaluate_baselines(train, held_out, V, max_n=2)["uniform"]["perplexity"] == pytest.approx(V, rel=1e-12)
    assert b.cross_entropy(b.uniform(7), [1, 2, 3]) == pytest.approx(math.log(7))


def test_unigram_is_add_one_smoothed_counts():
    model = b.fit_unigram(np.array([1, 1, 2]), 4)  # counts 0,2,1,0 of N = 3 -> (c + 1) / (3 + 4)
    np.testing.assert_allclose(b.next_probs(model, [2]), [1 / 7, 3 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(b.log_probs(model, [1, 3, 0]), np.log([3 / 7, 1 / 7, 1 / 7]))
    assert b.cross_entropy(model, [1, 3]) == pytest.approx(-(math.log(3 / 7) + math.log(1 / 7)) / 2)


def test_trigram_learns_a_pattern_the_bigram_cannot():
    pattern = np.tile([1, 1, 2], 100)  # "aab...": after "a" comes a or b, but after "aa" always b, after "ab" a
    tri, bi = b.fit_ngram(pattern, 4, 3), b.fit_ngram(pattern, 4, 2)
    assert b.next_probs(tri, [1, 1])[2] > 0.99 and b.next_probs(tri, [1, 2])[1] > 0.99
    assert b.next_probs(bi, [1])[2] < 0.6
    held_out = np.tile([1, 1, 2], 10)
    assert b.cross_entropy(tri, held_out, context=pattern) < 0.01
    assert b.cross_entropy(bi, held_out, context=pattern) > 0.4


def test_book_perplexities_fall_with_the_order_and_are_in_range(split):
    train, held_out, V = split
    ppl = {k: v["perplexity"] for k, v in b.evaluate_baselines(train, held_out, V).items()}
    # Measured on the 90/10 split: 28, 17.06, 10.00, 6.86, 5.06, 4.46.
    assert ppl["uniform"] > ppl["unigram"] > ppl["2-gram"] > ppl["3-gram"] > ppl["4-gram"] > ppl["5-gram"]
    assert 15 < ppl["unigram"] < 19 and 9 < ppl["2-gram"] < 11 and 6 < ppl["3-gram"] < 7.5
    assert 4 < ppl["5-gram"] < 5
    m = b.evaluate_baselines(train, held_out, V, max_n=2)["2-gram"]
    assert m["bits_per_char"] == pytest.approx(m["loss"] / math.log(2)) and m["perplexity"] == pytest.approx(
        math.exp(m["loss"])
    )


def test_held_out_is_one_stream_continuing_the_training_text(split):
    train, held_out, V = split
    model = b.fit_ngram(train, V, 4)
    stream = b.log_probs(model, np.concatenate([train, held_out]), start=len(train))
    assert len(stream) == len(held_out)
    assert b.cross_entropy(model, held_out, context=train) == pytest.approx(-stream.mean(), rel=1e-12)
    got = b.evaluate_baselines(train, held_out, V, max_n=4)["4-gram"]["loss"]
    assert got == pytest.approx(-stream.mean(), rel=1e-12)
    # Without the training context only the first three tokens see shorter contexts.
    alone = b.log_probs(model, held_out)
    np.testing.assert_array_equal(alone[3:], stream[3:])
    assert not np.array_equal(alone[:3], stream[:3])


def test_unknown_and_unseen_tokens_get_finite_loss(split):
    train, held_out, V = split
    eval_ids = held_out[:500].copy()
    eval_ids[::7] = 0  # <unk>, never seen in training
    for name, m in b.evaluate_baselines(train[train != 26], eval_ids, V).items():  # 26 ("j") unseen too
        assert math.isfinite(m["loss"]), name
    lp = b.log_probs(b.fit_ngram(train, V, 5), np.concatenate([train[-4:], [0, 0, 26, 0]]), start=4)
    assert np.all(np.isfinite(lp)) and np.all(lp < 0)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        b.fit_ngram(np.array([1, 4]), 4, 2)
    with pytest.raises(ValueError, match="at least n"):
        b.fit_ngram(np.array([1, 2]), 4, 3)
    with pytest.raises(ValueError, match="overflows"):
        b.fit_ngram(np.arange(5), 2**20, 4)


def test_held_out_text_continues_the_given_context_not_the_training_slice(split):
    train, held_out, V = split
    fit_on, before = train[:20_000], train  # the training slice ends long before the held-out text starts
    assert not np.array_equal(fit_on[-4:], before[-4:])
    got = b.evaluate_baselines(fit_on, held_out, V, max_n=5, context=before)
    for n in (2, 3, 4, 5):
        model = b.fit_ngram(fit_on, V, n)
        want = -b.log_probs(model, np.concatenate([before[-(n - 1) :], held_out]), start=n - 1).mean()
        assert got[f"{n}-gram"]["loss"] == pytest.approx(want, rel=1e-12), n
    default = b.evaluate_baselines(fit_on, held_out, V, max_n=5)  # no context: the training slice's end
    assert default["5-gram"]["loss"] != got["5-gram"]["loss"]
    assert default["unigram"] == got["unigram"]
    assert b.evaluate_baselines(train, held_out, V, max_n=3) == b.evaluate_baselines(
        train, held_out, V, max_n=3, context=train
    )  # a contiguous split: the default is already right


def test_empty_context_scores_the_first_tokens_with_shorter_contexts(split):
    train, held_out, V = split
    model = b.fit_ngram(train, V, 3)
    got = b.evaluate_baselines(train, held_out, V, max_n=3, context=np.array([], np.int32))["3-gram"]["loss"]
    assert got == pytest.approx(-b.log_probs(model, held_out).mean(), rel=1e-12)


# ------------------------------------------------------------------ the command line
def test_cli_prints_every_model(data_dir, capsys):
    assert b.main(["--data-dir", str(data_dir), "--max-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["uniform", "unigram", "2-gram"]
    assert "perplexity  28.000" in lines[0]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--split", "0"], "--split must lie strictly between 0 and 1"),
        (["--split", "-0.5"], "--split must lie strictly between 0 and 1"),
        (["--split", "1"], "--split must lie strictly between 0 and 1"),
        (["--split", "1.5"], "--split must lie strictly between 0 and 1"),
        (["--split", "nan"], "--split must lie strictly between 0 and 1, got nan"),
        (["--split", "1e-9"], "leaves 0 for training"),
        (["--max-n", "0"], "--max-n must be at least 1"),
        (["--max-n", "-2"], "--max-n must be at least 1"),
        (["--max-n", "14"], "overflows the int64"),
        (["--max-n", "1000000000"], "overflows the int64"),
    ],
)
def test_cli_rejects_bad_values(data_dir, capsys, argv, message):
    assert b.main(["--data-dir", str(data_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_cli_rejects_missing_empty_and_tiny_corpora(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "digits.txt").write_text("1984\n")
    (tmp_path / "short.txt").write_text("abc")
    cases = {
        "missing.txt": "no such file",
        "empty.txt": "no letters",
        "digits.txt": "no letters",
        "short.txt": "need at least 5 and 1",
    }
    for name, message in cases.items():
        assert b.main(["--corpus", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_cli_checks_options_before_reading_the_corpus(tmp_path, capsys):
    assert b.main(["--corpus", str(tmp_path / "missing.txt"), "--split", "nan"]) == 2
    assert "--split" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 4])
def test_modified_kneser_ney_matches_the_reference_and_is_normalised(split, n):
    train, _, V = split
    text = train[:6000]
    model = b.fit_ngram(text, V, n, discount_d="modified")
    for table in model.probs:
        np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert table.min() > 0
    for context in (text[100:103], np.array([9, 2, 26]), np.array([], np.int32)):
        want = [kn_reference(text, V, n, context, w, modified=True) for w in range(V)]
        np.testing.assert_allclose(b.next_probs(model, context), want, rtol=1e-12)


def test_modified_discounts_follow_the_count_of_counts():
    counts = np.array([1] * 10 + [2] * 4 + [3] * 2 + [4] * 1 + [9] * 3)
    y = 10 / (10 + 2 * 4)
    np.testing.assert_allclose(b.modified_discounts(counts), [0, 1 - 2 * y * 4 / 10, 2 - 3 * y * 2 / 4, 3 - 4 * y / 2])
    # a missing count-of-count falls back to Ney's single discount for every count
    np.testing.assert_allclose(b.modified_discounts(np.array([1, 1, 2])), [0, 0.5, 0.5, 0.5])


def test_modified_kneser_ney_beats_one_discount_on_the_book(split):
    train, held, V = split
    one, modified = (b.cross_entropy(b.fit_ngram(train, V, 6, d), held, train) for d in (None, "modified"))
    assert modified < one < math.log(V)


def test_adaptive_ngram_is_the_static_one_refitted_on_all_text_before_each_block(split):
    train, held, V = split
    text = np.concatenate([train, held[:900]])
    start = len(train)
    got = b.adaptive_cross_entropy(text, start, V, 3, None, every=300)
    want = 0.0
    for s in range(start, len(text), 300):  # by hand: refit, score the next block continuing the text before it
        want += len(text[s : s + 300]) * b.cross_entropy(b.fit_ngram(text[:s], V, 3), text[s : s + 300], text[:s])
    assert got == pytest.approx(want / 900, rel=1e-12)
    static = b.cross_entropy(b.fit_ngram(train, V, 3), held[:900], train)
    assert got < static  # reading the text it scores helps
    with pytest.raises(ValueError, match="start"):
        b.adaptive_cross_entropy(text, 0, V, 3)


def test_ppm_code_length_is_a_compression_difference_and_falls_with_context(data_dir):
    import pyppmd

    text = data.load_text(data_dir / "timemachine.txt")
    scored = text[-5000:]
    before = text[:-5000]
    direct = 8 * (
        len(pyppmd.compress((before + scored).encode(), max_order=6, mem_size=256 << 20, variant="I"))
        - len(pyppmd.compress(before.encode(), max_order=6, mem_size=256 << 20, variant="I"))
    )
    assert b.ppm_bits(before.encode(), scored.encode(), 6, "I") == direct
    assert b.ppm_cross_entropy(before, scored, 6, "I") == pytest.approx(direct * math.log(2) / 5000)
    # more of the true text before it: never a longer code, for both variants
    for variant in ("H", "I"):
        bits = [
            b.ppm_bits(before[len(before) - k :].encode() if k else b"", scored.encode(), 6, variant)
            for k in (0, 2_000, 20_000, 80_000, len(before))
        ]
        assert bits == sorted(bits, reverse=True), (variant, bits)
        assert bits[-1] < 0.8 * bits[0]
    assert b.ppm_bits(b"", scored.encode(), 6) == 8 * len(
        pyppmd.compress(scored.encode(), max_order=6, mem_size=256 << 20, variant="I")
    )


def test_cli_takes_a_corpus_name_and_its_cleaning(data_dir, capsys):
    assert b.main(["--corpus", "shakespeare", "--data-dir", str(data_dir), "--preprocess", "none", "--max-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "uniform  loss 4.1897  perplexity  66.000" in out  # 65 symbols and <unk>
    assert b.main(["--corpus", "hamlet", "--data-dir", str(data_dir)]) == 2
    assert "not a corpus name (timemachine, shakespeare)" in capsys.readouterr().err
