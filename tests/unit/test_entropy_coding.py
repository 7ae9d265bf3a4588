"""rANS entropy coding (semcom.entropy_coding): exact round trips, code length next to the ideal -log2 p, integer
frequency tables, and errors for bad tables, symbols and corrupted streams."""

import numpy as np
import pytest

from commlab.semcom.entropy_coding import quantised_frequencies, rans_decode, rans_encode


def _sample(freqs, contexts, lanes, seed=0):
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(freqs, axis=1) / freqs.sum(axis=1, keepdims=True)
    u = rng.random((lanes, len(contexts)))
    return (u[..., None] > cdf[contexts][None]).sum(-1)


@pytest.mark.parametrize("precision", [8, 12, 16])
def test_round_trip_is_exact_with_several_contexts(precision):
    rng = np.random.default_rng(1)
    freqs = quantised_frequencies(rng.dirichlet(np.full(30, 0.2), size=4), precision)
    contexts = rng.integers(0, 4, 3000)
    symbols = _sample(freqs, contexts, 6)
    streams = rans_encode(symbols, freqs, contexts, precision=precision)
    assert len(streams) == 6 and all(isinstance(s, bytes) for s in streams)
    assert np.array_equal(rans_decode(streams, 3000, freqs, contexts, precision=precision), symbols)


def test_rare_symbols_with_frequency_one_round_trip():
    freqs = np.array([[2**16 - 3, 1, 1, 1]])
    symbols = np.array([[1, 2, 3, 3, 2, 1, 0, 0, 3] * 50])
    contexts = np.zeros(symbols.shape[1], dtype=np.int64)
    assert np.array_equal(rans_decode(rans_encode(symbols, freqs, contexts), symbols.shape[1], freqs, contexts),
                          symbols)


def test_code_length_is_within_the_flushed_state_of_the_ideal():
    rng = np.random.default_rng(2)
    freqs = quantised_frequencies(rng.dirichlet(np.ones(12), size=3))
    contexts = rng.integers(0, 3, 20_000)
    symbols = _sample(freqs, contexts, 4, seed=3)
    ideal = -np.log2(freqs[contexts[None].repeat(4, 0), symbols] / 2**16).sum(axis=1) / 8  # bytes
    lengths = np.array([len(s) for s in rans_encode(symbols, freqs, contexts)])
    assert (lengths >= np.floor(ideal)).all() and (lengths <= ideal + 4 + 2).all()


def test_empty_sequences_cost_the_state_only():
    freqs = np.array([[2**15, 2**15]])
    streams = rans_encode(np.zeros((2, 0), dtype=np.int64), freqs, np.zeros(0, dtype=np.int64))
    assert [len(s) for s in streams] == [4, 4]
    assert rans_decode(streams, 0, freqs, np.zeros(0, dtype=np.int64)).shape == (2, 0)


def test_quantised_frequencies_sum_to_the_precision_and_keep_every_symbol():
    pmf = np.array([[1.0, 0.0, 0.0, 1e-12], [0.2, 0.3, 0.5, 0.0], [1, 1, 1, 1]])
    for precision in (8, 16):
        freqs = quantised_frequencies(pmf, precision)
        assert freqs.dtype == np.int64 and (freqs >= 1).all() and (freqs.sum(axis=1) == 2**precision).all()
    freqs = quantised_frequencies(pmf)
    assert np.allclose(freqs[1] / 2**16, [0.2, 0.3, 0.5, 0.0], atol=1e-3)


@pytest.mark.parametrize("pmf, match", [(np.ones(4), "contexts, symbols"), (np.ones((1, 200)), "at most"),
                                        (np.array([[1.0, -1.0]]), "non-negative"), (np.zeros((1, 3)), "all zero"),
                                        (np.array([[np.nan, 1.0]]), "finite")])
def test_quantised_frequencies_rejects_bad_pmfs(pmf, match):
    with pytest.raises(ValueError, match=match):
        quantised_frequencies(pmf, 8)


def test_encode_rejects_bad_symbols_tables_and_contexts():
    freqs = np.array([[2**15, 2**15]])
    ctx = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match="symbols must be in"):
        rans_encode(np.array([[0, 1, 2]]), freqs, ctx)
    with pytest.raises(ValueError, match="sum to"):
        rans_encode(np.array([[0, 1, 1]]), np.array([[2**15, 2**14]]), ctx)
    with pytest.raises(ValueError, match="contexts"):
        rans_encode(np.array([[0, 1, 1]]), freqs, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="integer array"):
        rans_encode(np.array([[0.0, 1.0, 1.0]]), freqs, ctx)


def test_decode_detects_truncated_and_extended_streams():
    rng = np.random.default_rng(4)
    freqs = quantised_frequencies(rng.dirichlet(np.ones(8), size=1))
    contexts = np.zeros(500, dtype=np.int64)
    stream = rans_encode(_sample(freqs, contexts, 1), freqs, contexts)[0]
    for broken in (stream[:-1], stream + b"\x00", stream[:3]):
        with pytest.raises(ValueError):
            rans_decode([broken], 500, freqs, contexts)
    with pytest.raises(TypeError):
        rans_decode(stream, 500, freqs, contexts)
