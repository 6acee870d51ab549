"""Document-masked packing: a token sees only its own document, positions restart at each,
and without documents the model computes exactly what it always did."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fundamentallm.model import GPT
from fundamentallm.model.documents import DocumentMasked, document_ids
from fundamentallm.model.transformer import document_mask, document_positions

EOS = 3


@pytest.fixture(params=["rope", "learned"])
def model(request, tiny_model_config):
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_model_config, vocab_size=20, position=request.param, zero_init=False)
    return GPT(cfg).eval()


def window(*documents: list[int]) -> torch.Tensor:
    """Documents, each ended by EOS, as one window (1, T)."""
    return torch.tensor([[t for doc in documents for t in [*doc, EOS]]])


def test_document_ids_and_positions_restart_after_each_end_of_text():
    x = window([5, 6], [7], [8, 9, 10])[:, :-1]  # (1, 8): the last document runs on past the window
    documents = document_ids(x, EOS)
    assert documents.tolist() == [[0, 0, 0, 1, 1, 2, 2, 2]]
    assert document_positions(documents).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]


def test_changing_another_document_never_changes_a_tokens_logits(model):
    masked = DocumentMasked(model, EOS)
    a = window([5, 6, 7], [8, 9], [10, 11, 12, 13])
    b = window([14, 15, 16], [8, 9], [17, 4, 12, 13])  # the middle document the same, its neighbours not
    with torch.no_grad():
        la, lb = masked(a), masked(b)
    middle = slice(4, 7)  # 8, 9 and its end of text
    torch.testing.assert_close(la[:, middle], lb[:, middle], rtol=0, atol=1e-6)
    # and a document alone in a window (at position 0) gives the same logits as in the pack
    with torch.no_grad():
        alone = model(torch.tensor([[8, 9, EOS]]))
    torch.testing.assert_close(la[:, middle], alone, rtol=0, atol=1e-5)
    # without the mask the neighbours do leak in: the test can tell
    with torch.no_grad():
        assert not torch.allclose(model(a)[:, middle], model(b)[:, middle])


def test_one_document_in_the_window_is_exactly_the_plain_model(model):
    x = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])  # no end of text: one document
    y = torch.tensor([[6, 7, 8, 9, 10, 11, 12, 13]])
    with torch.no_grad():
        assert torch.equal(DocumentMasked(model, EOS)(x, y), model(x, y))


def test_a_pack_trains_as_its_documents_would_alone(model):
    """The loss and the gradients of a packed window are the sums of its documents' own."""
    packed = DocumentMasked(model, EOS)(torch.tensor([[5, 6, 7, EOS, 8, 9, 10]]),
                                        torch.tensor([[6, 7, EOS, 8, 9, 10, EOS]]), reduction="sum")
    packed.backward()
    packed_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alone = (model(torch.tensor([[5, 6, 7, EOS]]), torch.tensor([[6, 7, EOS, 8]]), reduction="sum")
             + model(torch.tensor([[8, 9, 10]]), torch.tensor([[9, 10, EOS]]), reduction="sum"))
    alone.backward()
    assert packed.item() == pytest.approx(alone.item(), rel=1e-5)
    for a, b in zip(packed_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_flex_attention_agrees_with_the_dense_mask():
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(1)
    documents = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1, 2, 3]])  # (2, 8)
    q, k, v = (torch.randn(2, 2, 8, 16) for _ in range(3))

    def same_document(b, h, q_index, kv_index):
        return (q_index >= kv_index) & (documents[b, q_index] == documents[b, kv_index])

    block_mask = flex.create_block_mask(same_document, 2, None, 8, 8, device="cpu")
    with torch.no_grad():  # CPU FlexAttention has a forward pass only
        expected = flex.flex_attention(q, k, v, block_mask=block_mask)
        dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=document_mask(documents))
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-5)
