import dataclasses
import hashlib
import http.server
import threading

import numpy as np
import pytest

from rnn_jax import corpora, data
from rnn_jax import experiments as experiments_lib

BOOK_VOCAB = [
    "<unk>",
    " ",
    "e",
    "t",
    "a",
    "i",
    "n",
    "o",
    "s",
    "h",
    "r",
    "d",
    "l",
    "m",
    "u",
    "c",
    "f",
    "w",
    "g",
    "y",
    "p",
    "b",
    "v",
    "k",
    "x",
    "z",
    "j",
    "q",
]


@pytest.fixture(scope="module")
def book(data_dir):
    return data.load_corpus(data_dir / "timemachine.txt")


@pytest.fixture(scope="module")
def small(small_text):
    """Any text of 10,000 tokens or more: the minibatch schemes and vocabularies do not depend on what it says."""
    return data.load_corpus(small_text)


def test_preprocess_is_the_books_per_line_cleaning():
    text = "The Time--Machine,\n  by H. G. Wells [1898]\n\nHim\nwas 42 ok\r\n"
    assert data.preprocess(text) == "the time machineby h g wellshimwas ok"


def test_vocabulary_corpus_length_and_first_tokens(book):
    tokens, vocab = book
    assert vocab.idx_to_token == BOOK_VOCAB
    assert len(tokens) == 170_580
    assert vocab.decode(tokens[:30]) == "the time machine by h g wellsi"
    assert tokens.dtype == np.int32 and tokens.min() >= 1  # no <unk> in the book itself


def test_max_tokens_truncates_the_corpus_not_the_vocabulary(small_text, small):
    tokens, vocab = data.load_corpus(small_text, max_tokens=10_000)
    assert len(tokens) == 10_000 < len(small[0])
    np.testing.assert_array_equal(tokens, small[0][:10_000])
    assert vocab == small[1]


def test_vocab_ties_by_first_occurrence_and_unknowns_map_to_unk():
    vocab = data.Vocab.build("abcabcxd")
    assert vocab.idx_to_token == ["<unk>", "a", "b", "c", "x", "d"]
    np.testing.assert_array_equal(vocab.encode("a?d"), [1, 0, 5])
    assert vocab.unknown("a?!?") == {"?": 2, "!": 1}
    assert vocab.decode(vocab.encode("cab")) == "cab"


def test_vocab_round_trips_through_json(tmp_path, small):
    small[1].save(tmp_path / "vocab.json")
    assert data.Vocab.load(tmp_path / "vocab.json") == small[1]


@pytest.mark.parametrize("sampling", ["seq", "random"])
def test_book_settings_give_eight_minibatches_every_epoch(small, sampling):
    corpus = small[0][:10_000]
    for epoch in range(40):
        X, Y = data.SCHEMES[sampling](corpus, 32, 35, data.epoch_rng(0, epoch))
        assert X.shape == Y.shape == (8, 32, 35)
    assert data.min_batches(10_000, 32, 35, sampling) == 8


@pytest.mark.parametrize("sampling", ["seq", "random"])
def test_targets_are_the_inputs_shifted_by_one(small, sampling):
    corpus = small[0][:10_000]
    X, Y = data.SCHEMES[sampling](corpus, 32, 35, data.epoch_rng(3, 1))
    np.testing.assert_array_equal(Y[..., :-1], X[..., 1:])
    # the last target is the corpus token that follows the window
    starts = _window_starts(corpus, X)
    np.testing.assert_array_equal(Y[..., -1], corpus[starts + 35])


def _window_starts(corpus, X):
    """Where each window X[i, b] starts in the corpus (asserting it occurs there)."""
    T = X.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(corpus, T)
    starts = np.empty(X.shape[:2], np.int64)
    for i, b in np.ndindex(*X.shape[:2]):
        hits = np.flatnonzero((windows == X[i, b]).all(axis=1))
        assert hits.size, "window not found in the corpus"
        starts[i, b] = hits[0]
    return starts


def test_sequential_rows_continue_across_minibatches(small):
    corpus = small[0][:10_000]
    for epoch in range(5):
        X, _ = data.seq_batches(corpus, 32, 35, data.epoch_rng(0, epoch))
        rows = X.transpose(1, 0, 2).reshape(32, -1)  # row r of minibatch i+1 continues row r of i
        offset = int(np.flatnonzero((np.lib.stride_tricks.sliding_window_view(corpus, 35) == X[0, 0]).all(1))[0])
        assert 0 <= offset <= 35
        row_len = (len(corpus) - offset - 1) // 32
        for r in range(32):
            start = offset + r * row_len
            np.testing.assert_array_equal(rows[r], corpus[start : start + rows.shape[1]])


def test_random_sampling_uses_disjoint_windows_at_one_offset(small):
    corpus = small[0][:10_000]
    X, _ = data.random_batches(corpus, 32, 35, data.epoch_rng(0, 7))
    starts = _window_starts(corpus, X).ravel()
    assert len(set(starts % 35)) == 1  # one offset (its range: test_offsets_cover_the_books_range)
    assert len(set(starts)) == starts.size  # no window twice
    assert np.all(np.diff(np.sort(starts)) >= 35)  # non-overlapping


@pytest.mark.parametrize("sampling,largest", [("random", 4), ("seq", 5)])
def test_offsets_cover_the_books_range(sampling, largest):
    # Token i of this corpus is i, so a window's first token is where it starts. With one row, random sampling
    # keeps every window, so the earliest start is the offset; in seq mode row 0 of minibatch 0 starts there.
    corpus, T = np.arange(200), 5
    offsets = {
        int(data.SCHEMES[sampling](corpus, 1, T, data.epoch_rng(0, epoch))[0][..., 0].min()) for epoch in range(300)
    }
    assert min(offsets) == 0 and max(offsets) == largest  # random: [0, T-1]; seq: [0, T], inclusive as the book


def test_minibatches_are_pure_in_seed_and_epoch(small):
    corpus = small[0][:10_000]
    a = data.random_batches(corpus, 32, 35, data.epoch_rng(1, 2))[0]
    b = data.random_batches(corpus, 32, 35, data.epoch_rng(1, 2))[0]
    c = data.random_batches(corpus, 32, 35, data.epoch_rng(1, 3))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("sampling", ["seq", "random"])
def test_corpus_too_short_for_one_minibatch_is_a_clear_error(sampling):
    with pytest.raises(corpora.DataError, match="too few for one minibatch.*--batch-size"):
        data.check_length(500, 32, 35, sampling)
    data.check_length(32 * 35 + 36, 32, 35, sampling)


def test_gutenberg_header_and_licence_are_stripped(data_dir):
    raw = (data_dir / "war_of_the_worlds.txt").read_text(encoding="utf-8")
    body = data.strip_gutenberg(raw)
    assert "Project Gutenberg" in raw[:2000] and "PROJECT GUTENBERG" not in body.upper()[:500]
    assert "LICENSE" not in body.upper()[-3000:]
    assert "THE WAR OF THE WORLDS" in body[:2000].upper()
    assert data.strip_gutenberg("plain text") == "plain text"


# ------------------------------------------------------------------ where the corpus comes from
def test_explicit_corpus_and_data_dir_win(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("RNN_JAX_DATA_DIR", str(tmp_path / "nowhere"))
    other = tmp_path / "other.txt"
    other.write_text("abc")
    assert corpora.resolve_corpus(corpus=str(other)) == other
    assert corpora.resolve_corpus(data_dir=str(data_dir)) == data_dir / "timemachine.txt"


def test_env_variable_then_cache(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("RNN_JAX_DATA_DIR", str(data_dir))
    assert corpora.resolve_corpus() == data_dir / "timemachine.txt"
    monkeypatch.delenv("RNN_JAX_DATA_DIR")
    monkeypatch.setenv("RNN_JAX_CACHE", str(tmp_path))
    (tmp_path / "timemachine.txt").write_bytes((data_dir / "timemachine.txt").read_bytes())
    monkeypatch.setenv("RNN_JAX_DATA_URL", "http://127.0.0.1:9/unreachable")  # must not be used
    assert corpora.resolve_corpus() == tmp_path / "timemachine.txt"


def test_wrong_file_in_data_dir_names_the_sha1(tmp_path):
    (tmp_path / "timemachine.txt").write_text("not the book")
    with pytest.raises(corpora.DataError, match="SHA-1 .* not the book's 090b5e7e"):
        corpora.resolve_corpus(data_dir=str(tmp_path))
    with pytest.raises(corpora.DataError, match="does not exist"):
        corpora.resolve_corpus(data_dir=str(tmp_path / "missing"))


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on loopback."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_is_verified_and_cached(tmp_path, monkeypatch, data_dir, http_server):
    root, url = http_server
    monkeypatch.delenv("RNN_JAX_DATA_DIR", raising=False)
    monkeypatch.setenv("RNN_JAX_CACHE", str(tmp_path / "cache"))
    (root / "timemachine.txt").write_bytes((data_dir / "timemachine.txt").read_bytes())
    monkeypatch.setenv("RNN_JAX_DATA_URL", f"{url}/timemachine.txt")
    path = corpora.resolve_corpus()
    assert path == tmp_path / "cache" / "timemachine.txt"
    assert hashlib.sha1(path.read_bytes()).hexdigest() == corpora.TIME_MACHINE_SHA1


def test_download_with_wrong_sha1_keeps_nothing(tmp_path, monkeypatch, http_server):
    root, url = http_server
    monkeypatch.delenv("RNN_JAX_DATA_DIR", raising=False)
    monkeypatch.setenv("RNN_JAX_CACHE", str(tmp_path / "cache"))
    (root / "timemachine.txt").write_text("tampered")
    monkeypatch.setenv("RNN_JAX_DATA_URL", f"{url}/timemachine.txt")
    with pytest.raises(corpora.DataError, match="SHA-1 .*expected 090b5e7e.*nothing was kept"):
        corpora.resolve_corpus()
    assert list((tmp_path / "cache").iterdir()) == []


def test_failed_download_says_what_to_do(tmp_path, monkeypatch, http_server):
    _, url = http_server
    monkeypatch.delenv("RNN_JAX_DATA_DIR", raising=False)
    monkeypatch.setenv("RNN_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RNN_JAX_DATA_URL", f"{url}/missing.txt")
    with pytest.raises(corpora.DataError, match="could not download .*--data-dir"):
        corpora.resolve_corpus()


def test_unreadable_corpora_are_clear_errors(tmp_path):
    with pytest.raises(corpora.DataError, match="no such file"):
        corpora.resolve_corpus(corpus=str(tmp_path / "nope.txt"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(corpora.DataError, match="not valid UTF-8"):
        data.load_corpus(bad)
    empty = tmp_path / "digits.txt"
    empty.write_text("1234 5678\n")
    with pytest.raises(corpora.DataError, match="no letters"):
        data.load_corpus(empty)


# ------------------------------------------------------------------ named corpora
def test_corpus_names_resolve_in_the_data_dir_and_are_verified(tmp_path, data_dir):
    shakespeare = corpora.resolve_corpus("shakespeare", str(data_dir))
    assert shakespeare == data_dir / "tinyshakespeare.txt"
    assert corpora.sha1_of(shakespeare) == corpora.CORPORA["shakespeare"].sha1
    assert corpora.resolve_corpus("timemachine", str(data_dir)) == data_dir / "timemachine.txt"
    assert corpora.corpus_name(shakespeare) == "shakespeare"
    assert corpora.corpus_name(tmp_path / "x.txt", "0" * 40) == "x.txt"
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen:\nnot the published file\n")
    with pytest.raises(corpora.DataError, match="SHA-1 .* not tiny Shakespeare's 04486597"):
        corpora.resolve_corpus("shakespeare", str(tmp_path))


def test_a_named_corpus_is_downloaded_verified_and_cached(tmp_path, monkeypatch, data_dir, http_server):
    root, url = http_server
    monkeypatch.delenv("RNN_JAX_DATA_DIR", raising=False)
    monkeypatch.setenv("RNN_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RNN_JAX_URL_SHAKESPEARE", f"{url}/input.txt")
    (root / "input.txt").write_text("tampered")
    with pytest.raises(corpora.DataError, match="expected 04486597.*nothing was kept"):
        corpora.resolve_corpus("shakespeare")
    (root / "input.txt").write_bytes((data_dir / "tinyshakespeare.txt").read_bytes())
    assert corpora.resolve_corpus("shakespeare") == tmp_path / "cache" / "tinyshakespeare.txt"
    (root / "input.txt").unlink()  # the cached copy is used from now on
    assert corpora.resolve_corpus("shakespeare") == tmp_path / "cache" / "tinyshakespeare.txt"


def test_an_unknown_name_that_is_not_a_file_lists_the_names():
    with pytest.raises(corpora.DataError, match="not a corpus name \\(timemachine, shakespeare\\)"):
        corpora.resolve_corpus("hamlet")


def test_preprocess_none_keeps_every_character(data_dir):
    path = data_dir / "tinyshakespeare.txt"
    raw = path.read_text(encoding="utf-8")
    tokens, vocab = data.load_corpus(path, -1, "none")
    assert len(tokens) == len(raw) == 1_115_394
    assert len(vocab) == 66 and set(vocab.idx_to_token[1:]) == set(raw)  # nanoGPT's 65 symbols, and <unk>
    assert vocab.decode(tokens) == raw  # a round trip: case, punctuation and newlines kept
    assert vocab.idx_to_token[1] == " " and "\n" in vocab.token_to_idx


def test_the_floor_rule_cuts_where_nanogpt_does(data_dir):
    tokens, _ = data.load_corpus(data_dir / "tinyshakespeare.txt", -1, "none")
    n = len(tokens)
    cfg = experiments_lib.EXPERIMENTS["shakespeare"]
    parts = data.splits(tokens, cfg)
    test, before = parts["test"]
    assert len(before) == int(n * 0.9) == 1_003_854  # nanoGPT: train_data = data[:int(n * 0.9)]
    np.testing.assert_array_equal(test, tokens[int(n * 0.9) :])
    val, val_before = parts["val"]
    assert len(val) == round(0.05 * n) and len(val_before) + len(val) == int(n * 0.9)
    np.testing.assert_array_equal(parts["train"][0], val_before)
    # the default rule is unchanged: the last round(n * f) tokens
    assert (
        len(data.split_corpus(np.arange(15), 0.0, 0.1)[2])
        == 2
        == len(data.split_corpus(np.arange(15), 0, 0.1, "floor")[2])
    )
    assert len(data.split_corpus(np.arange(14), 0.0, 0.1)[2]) == 1
    assert len(data.split_corpus(np.arange(14), 0.0, 0.1, "floor")[2]) == 2


@pytest.mark.parametrize("max_tokens,val_fraction", [(300, 0.0), (300, 0.2), (-1, 0.0), (5_000, 0.1)])
def test_unseen_is_the_training_part_after_max_tokens_and_leaves_the_other_splits_as_they_were(
    max_tokens, val_fraction
):
    tokens = np.arange(1_000, dtype=np.int32)
    cfg = dataclasses.replace(experiments_lib.BASE, max_tokens=max_tokens, val_fraction=val_fraction, test_fraction=0.1)
    parts = data.splits(tokens, cfg)
    train, val, test = data.split_corpus(tokens, val_fraction, 0.1)
    assert np.array_equal(parts["train"][0], train if max_tokens < 0 else train[:max_tokens])
    assert np.array_equal(parts["val"][0], val) and np.array_equal(parts["val"][1], train)
    assert np.array_equal(parts["test"][0], test) and np.array_equal(parts["all"][0], tokens)
    unseen, trained = parts["unseen"]
    assert np.array_equal(trained, parts["train"][0])
    assert np.array_equal(np.concatenate([trained, unseen]), train)  # up to the validation part, never into it


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_preprocess_none_keeps_carriage_returns(tmp_path, newline):
    text = f"First Citizen:{newline}Before we proceed,{newline}{newline}hear me speak.{newline}"
    path = tmp_path / "crlf.txt"
    path.write_bytes(text.encode())
    tokens, vocab = data.load_corpus(path, -1, "none")
    assert vocab.decode(tokens) == text and "\r" in vocab.token_to_idx  # every character, \r included
    lf = tmp_path / "lf.txt"
    lf.write_bytes(text.replace(newline, "\n").encode())
    for mode in ("book", "raw"):  # the other modes read universal newlines, as before
        assert data.load_text(path, mode) == data.load_text(lf, mode)


# SHA-1 of the token ids and of the vocabulary of each (file, mode) as the cleaning gave them before \r was kept
CLEANED = {
    ("timemachine.txt", "book"): (
        "cd283b269b12a6e1effe1ed7522d6de851fc4c5b",
        "a7c31531436a5c80a22d7417d4607321c81a5b7b",
    ),
    ("timemachine.txt", "raw"): (
        "14ceca625749f655e7d3a57b744c52f8b71e51ae",
        "91a41c724e35dd480e4777680e4d90f160cb3348",
    ),
    ("war_of_the_worlds.txt", "book"): (
        "e82daacce9bd95a72fcff77f84764ee1d8b076ea",
        "2088bf3e8261dd40a8e14b5ac64ba67dcfd8aa35",
    ),
    ("war_of_the_worlds.txt", "raw"): (
        "bbb69fd0ce9c652b189cca3016a348aa787cadda",
        "4ebcf0eefddfd854800aadbda08b9694b105e376",
    ),
}


@pytest.mark.parametrize("file,mode", list(CLEANED))
def test_the_cleaning_modes_give_the_same_tokens_bit_for_bit(data_dir, file, mode):
    tokens, vocab = data.load_corpus(data_dir / file, -1, mode)  # war_of_the_worlds.txt has CRLF line ends
    digest = lambda b: hashlib.sha1(b).hexdigest()
    assert (digest(tokens.tobytes()), digest("".join(vocab.idx_to_token).encode())) == CLEANED[file, mode]
