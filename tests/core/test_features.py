"""The streaming spectrogram against an independent numpy computation of the spec's formulas."""

import numpy as np
import torch

from namm.cache import MemoryLayer
from namm.features import SpectralConfig, age_embedding
from namm.policies import NAMM


def _numpy_features(rows_per_update, n_up, n_fft=32, hop=16, gamma=0.99):
    """Spec §2 literally: per update, series = [16 carried samples | n_up rows], STFT magnitude frames,
    EMA weights w_j = (1-beta) beta^(T-1-j), carry E <- E_new + gamma^n_up E_prev. No eviction."""
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    beta = gamma**hop
    E = None
    tail = None
    for A in rows_per_update:  # A: [n_up queries, N tokens] float64
        n_tok = A.shape[1]
        prev = np.zeros((n_tok, n_fft - hop))
        if tail is not None:
            prev[: tail.shape[0]] = tail
        series = np.concatenate([prev, A.T], axis=1)  # [N, n_up + 16]
        T = (series.shape[1] - n_fft) // hop + 1
        frames = np.stack([np.abs(np.fft.rfft(series[:, j * hop : j * hop + n_fft] * win)) for j in range(T)], 1)
        w = (1 - beta) * beta ** (T - 1 - np.arange(T))
        E_new = (frames * w[None, :, None]).sum(1)
        if E is not None:
            E_new[: E.shape[0]] += gamma**n_up * E
        E = E_new
        tail = series[:, -(n_fft - hop):]
    return E


def test_streaming_spectrogram_matches_numpy():
    n_up, updates, h = 64, 3, 2
    g = torch.Generator().manual_seed(0)
    policy = NAMM(n_up=n_up)  # zero weights: evicts nothing
    layer = MemoryLayer(policy, 0)
    per_head = [[] for _ in range(h)]
    for u in range(updates):
        dummy = torch.zeros(1, h, n_up, 1)
        layer.update(dummy, dummy)
        qpos = layer.mark_padding(None)
        n = (u + 1) * n_up
        logits = torch.randn(1, h, n_up, n, generator=g, dtype=torch.float64)
        causal = torch.arange(n)[None, :] <= (u * n_up + torch.arange(n_up))[:, None]
        A = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)
        # feed in uneven pieces: streaming must not care how queries are grouped
        for s, e in ((0, 5), (5, 37), (37, n_up)):
            policy.observe(layer.state, A[:, :, s:e].float(), qpos[:, s:e])
        for hh in range(h):
            per_head[hh].append(A[0, hh].numpy())
    for hh in range(h):
        ref = _numpy_features(per_head[hh], n_up)
        got = layer.state["ema"][0, hh].double().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)


def test_age_embedding_layout():
    cfg = SpectralConfig()
    e = age_embedding(torch.tensor([0, 10]), cfg)
    assert e.shape == (2, 8)
    w = 50000.0 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(e[1, :4].numpy(), np.sin(10 * w), rtol=1e-6)
    np.testing.assert_allclose(e[1, 4:].numpy(), np.cos(10 * w), rtol=1e-6)
    assert torch.equal(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))


def test_batched_frames_equal_frame_by_frame():
    """The batched fast path (one rFFT per chunk) and the general per-block path agree, with rows at
    different hop phases (left padding of different lengths), chunks shorter and longer than a hop."""
    policy = NAMM(n_up=64)
    real = torch.ones(3, 7, dtype=torch.bool)
    real[0, :5] = False  # row 0: 5 padding tokens, row 1: none, row 2: the whole first chunk
    real[2] = False
    states = []
    for path in ("suffix", "rows"):
        layer = MemoryLayer(policy, 0)
        gg = torch.Generator().manual_seed(1)
        for chunk in (7, 40, 17, 1, 63, 16):
            dummy = torch.zeros(3, 2, chunk, 1)
            layer.update(dummy, dummy)
            qpos = layer.mark_padding(real if chunk == 7 else None)
            attn = torch.rand(3, 2, chunk, layer.pos.shape[-1], generator=gg)
            if path == "suffix":
                policy._observe_suffix(layer.state, attn, qpos[:, -1:] - torch.arange(chunk - 1, -1, -1))
            else:
                policy._observe_rows(layer.state, attn, qpos)
        states.append(layer.state)
    assert states[1]["ema"][2].abs().sum() > 0  # every row folded real frames
    for name in ("tail", "block", "ema"):
        torch.testing.assert_close(states[0][name], states[1][name], rtol=1e-5, atol=1e-6)


def test_all_observe_paths_give_the_same_spectrogram():
    """Whole-block chunks (prefill), odd chunks and single queries (decode) fold the same frames."""
    from namm.cache import SlotState

    torch.manual_seed(0)
    pol = NAMM(n_up=64)
    b, h, n, total = 2, 3, 160, 128

    def fresh():
        st = SlotState()
        for name, shape in pol.token_state().items():
            st[name] = torch.zeros(b, h, n, *shape)
        return st

    A = torch.rand(b, h, total, n)
    qpos = torch.arange(total)[None].expand(b, -1)
    states = []
    for pieces in ([(0, 64), (64, 128)], [(0, 7), (7, 50), (50, 128)], [(i, i + 1) for i in range(total)]):
        st = fresh()
        for s, e in pieces:
            pol.observe(st, A[:, :, s:e], qpos[:, s:e])
        states.append(st)
    for other in states[1:]:
        for name in ("ema", "tail", "block"):
            torch.testing.assert_close(other[name], states[0][name], rtol=1e-5, atol=1e-6)


def test_spectrum_is_the_windowed_rfft_magnitude_along_any_dim():
    from namm.features import spectrum

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 5, generator=g)
    win = torch.hann_window(32, periodic=True, dtype=torch.float64)
    want = torch.fft.rfft(x.double().movedim(2, -1) * win, dim=-1).abs().movedim(-1, 2)  # [2, 3, 17, 5]
    for dim, frames in ((2, x), (-2, x), (-1, x.movedim(2, -1)), (0, x.movedim(2, 0))):
        got = spectrum(frames, 32, dim=dim)
        back = got.movedim(dim, 2) if dim not in (2, -2) else got
        torch.testing.assert_close(back.double(), want, atol=2e-6, rtol=1e-5)
