"""The attention kernel's paths agree: the CAUSAL marker (fused kernel, or the rows path masking only the
piece's own block) equals an explicit bottom-right mask, with and without rows, GQA and soft-capping."""

from __future__ import annotations

import pytest
import torch

from namm.attention import CAUSAL, _attend


@pytest.mark.parametrize("q, n, softcap", [(1, 9, None), (5, 5, None), (7, 20, None), (7, 20, 3.0)])
def test_causal_marker_equals_an_explicit_mask(q, n, softcap):
    g = torch.Generator().manual_seed(q * 100 + n)
    query, key, value = (torch.randn(2, 6, q, 8, generator=g), torch.randn(2, 2, n, 8, generator=g),
                         torch.randn(2, 2, n, 8, generator=g))
    explicit = torch.arange(n)[None, :] <= (n - q + torch.arange(q))[:, None]  # [q, N]
    ref_out, ref_rows = _attend(query, key, value, explicit, 0.3, True, softcap)
    for need_rows in (True, False):
        out, rows = _attend(query, key, value, CAUSAL, 0.3, need_rows, softcap)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
        if need_rows:
            torch.testing.assert_close(rows, ref_rows, rtol=1e-5, atol=1e-7)
            assert rows.shape == (2, 2, q, n) and bool((rows[..., -1][:, :, :-1] == 0).all())  # the future is hidden
        else:
            assert rows is None
