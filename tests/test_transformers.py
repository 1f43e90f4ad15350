"""The Hugging Face integration against transformers' own loss, on a tiny randomly initialised
Llama (no download): ForCausalLMLoss against transformers.loss.loss_utils.ForCausalLMLoss, and
Trainer runs with gradient accumulation and uneven padding, transformers' default loss against
``compute_loss_func=FusedCausalLMLoss(model)`` and ``model.loss_function = ForCausalLMLoss``:
the same logged losses and the same parameters after every step. Skipped without transformers
(the ``hf`` extra); CI installs it."""

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from transformers.loss.loss_utils import ForCausalLMLoss as hf_for_causal_lm_loss  # noqa: E402

from exportable_loss.integrations.transformers import ForCausalLMLoss, FusedCausalLMLoss  # noqa: E402

VOCAB, TOKENS = 48, 10


def _tiny_llama(seed=0):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)


def _examples(count=8, seed=0):
    """Sequences with padding of different lengths (labels -100 there)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        ids = torch.randint(0, VOCAB, (TOKENS,), generator=g)
        labels = ids.clone()
        labels[TOKENS - (3 * i) % 7 :] = -100
        out.append(dict(input_ids=ids, labels=labels, attention_mask=torch.ones(TOKENS, dtype=torch.long)))
    return out


@pytest.mark.parametrize("num_items", [None, "tensor", "int"])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_for_causal_lm_loss_is_transformers_own(num_items, ignore_index):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, TOKENS, VOCAB, generator=g)
    labels = torch.randint(0, VOCAB, (3, TOKENS), generator=g)
    labels[0, 6:] = ignore_index
    labels[2, ::3] = ignore_index
    counted = int((labels[:, 1:] != ignore_index).sum()) + 5  # as if other micro-batches held 5 more
    items = {None: None, "tensor": torch.tensor(counted), "int": counted}[num_items]
    for shift in (None, torch.roll(labels, 1, 1)):
        results = []
        for fn in (ForCausalLMLoss, hf_for_causal_lm_loss):
            x = logits.clone().bfloat16().requires_grad_(True)  # both upcast the logits
            loss = fn(x, labels, VOCAB, num_items_in_batch=items, ignore_index=ignore_index, shift_labels=shift)
            results.append((loss, torch.autograd.grad(loss, x)[0]))
        (ours, ours_grad), (theirs, theirs_grad) = results
        assert ours.dtype == theirs.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours_grad, theirs_grad)


def _train(tmp_path, setup, steps=3):
    """A Trainer run: SGD, 2 examples per device, 2 accumulation steps; the logged losses and
    the parameters after the run."""
    model = _tiny_llama()
    compute_loss_func = setup(model)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=steps,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_examples(4 * steps),
        compute_loss_func=compute_loss_func,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, {name: p.detach().clone() for name, p in model.named_parameters()}


def _hf_default(model):
    return None


def _our_loss_function(model):
    model.loss_function = ForCausalLMLoss
    return None


def _fused(model):
    return FusedCausalLMLoss(model)


def test_trainer_with_gradient_accumulation_matches_transformers_default(tmp_path):
    """3 optimizer steps of 2 accumulated micro-batches: the same logged losses and parameters."""
    reference_losses, reference = _train(tmp_path / "hf", _hf_default)
    assert len(reference_losses) == 3
    for setup in (_our_loss_function, _fused):
        losses, parameters = _train(tmp_path / setup.__name__, setup)
        assert losses == pytest.approx(reference_losses, rel=1e-5), setup.__name__
        for name, value in parameters.items():
            torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6, msg=f"{setup.__name__}: {name}")
    # the run moved the parameters (so equal parameters mean equal gradients)
    start = dict(_tiny_llama().named_parameters())
    assert max((reference[n] - p.detach()).abs().max().item() for n, p in start.items()) > 1e-2


def test_fused_loss_never_sees_the_whole_logits():
    model = _tiny_llama()
    loss_fn = FusedCausalLMLoss(model, label_smoothing=0.1)
    batch = _examples(2)
    ids = torch.stack([b["input_ids"] for b in batch])
    labels = torch.stack([b["labels"] for b in batch])
    outputs = model(input_ids=ids)
    assert outputs.logits.shape == (2, 1, VOCAB)  # the last position's only
    loss = loss_fn(outputs, labels, num_items_in_batch=torch.tensor(11))
    model.eval()
    full = model(input_ids=ids).logits  # evaluation keeps every position's logits
    assert full.shape == (2, TOKENS, VOCAB)
    ref = torch.nn.functional.cross_entropy(
        full.reshape(-1, VOCAB), torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].reshape(-1),
        label_smoothing=0.1, reduction="sum",
    ) / 11  # fmt: skip
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    loss_fn.remove()
    model.train()
    assert model(input_ids=ids).logits.shape == (2, TOKENS, VOCAB)


def test_fused_loss_refuses_what_it_cannot_reproduce():
    model = _tiny_llama()
    model.config.logits_scaling = 4.0
    with pytest.raises(ValueError, match=r"does not apply the model's logits_scaling; got config.logits_scaling=4.0"):
        FusedCausalLMLoss(model)
    with pytest.raises(ValueError, match="reduces with 'mean'; got reduction='sum'"):
        FusedCausalLMLoss(_tiny_llama(), reduction="sum")
    with pytest.raises(ValueError, match="forward takes logits_to_keep"):
        FusedCausalLMLoss(torch.nn.Linear(2, 2))
