"""Hugging Face ``transformers``: the causal-LM loss as a drop-in, and a fused loss for ``Trainer``.

Two ways in, for a causal language model (``LlamaForCausalLM`` and its kin):

- [ForCausalLMLoss][exportable_loss.integrations.transformers.ForCausalLMLoss], transformers' own
  signature and results, assigned as ``model.loss_function = ForCausalLMLoss``: the model still
  computes its logits, this library's cross entropy scores them.
- [FusedCausalLMLoss][exportable_loss.integrations.transformers.FusedCausalLMLoss], a
  ``compute_loss_func`` for ``Trainer``: the model computes its hidden states and the logits of
  its last position only; the loss is
  [FusedLinearCrossEntropyLoss][exportable_loss.losses.FusedLinearCrossEntropyLoss] on the final
  hidden states and the output layer, so the ``(batch, tokens, vocabulary)`` logits never exist.

Both divide by ``num_items_in_batch`` when ``Trainer`` passes it (the counted tokens of the whole
accumulated step, over every device), so gradient accumulation gives the gradient of the step's
mean. Needs the ``hf`` extra (``pip install exportable-loss[hf]``); importing this module does not
import transformers.
"""

from typing import Any, Dict, Optional, Tuple, Union, cast

import torch
from torch import Tensor, nn

from exportable_loss._classification import cross_entropy
from exportable_loss._linear_ce import FusedLinearCrossEntropyLoss
from exportable_loss._targets import shift_labels as _shift

__all__ = ["ForCausalLMLoss", "FusedCausalLMLoss"]

ItemCount = Union[Tensor, int, None]


def _normalizer(num_items_in_batch: ItemCount, device: torch.device) -> Optional[Tensor]:
    if num_items_in_batch is None:
        return None
    return torch.as_tensor(num_items_in_batch, device=device)


def ForCausalLMLoss(  # noqa: N802 (transformers' name)
    logits: Tensor,
    labels: Tensor,
    vocab_size: int,
    num_items_in_batch: ItemCount = None,
    ignore_index: int = -100,
    shift_labels: Optional[Tensor] = None,
    **kwargs: Any,
) -> Tensor:
    """transformers' ``ForCausalLMLoss``, with this library's cross entropy.

    Same arguments and results as ``transformers.loss.loss_utils.ForCausalLMLoss``: the logits
    upcast to float32, the labels shifted (``labels[..., t + 1]`` scores position ``t``, the last
    position ignored) unless ``shift_labels`` gives them, the mean over counted tokens, or the sum
    divided by ``num_items_in_batch`` where given. One difference: ``num_items_in_batch = 0``
    gives 0, not NaN. The logits are never copied but for the upcast (a no-op for float32).

    Args:
        logits: ``(batch, tokens, vocab_size)``.
        labels: ``(batch, tokens)`` token ids, ``ignore_index`` where nothing is predicted.
        vocab_size: the logits' last dimension.
        num_items_in_batch: the tokens counted in the whole accumulated step (``Trainer``'s).
        ignore_index: the label of positions that do not count.
        shift_labels: labels already shifted (``labels`` is then not read).
        **kwargs: the model's other keyword arguments, ignored as transformers ignores them.

    Returns:
        The 0-dim float32 loss.

    Examples:
        >>> logits = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]]])
        >>> ForCausalLMLoss(logits, torch.tensor([[0, 1, 2]]), vocab_size=3)  # position t predicts t + 1
        tensor(0.2395)
    """
    logits = logits.float()
    if shift_labels is None:
        shift_labels = _shift(labels, ignore_index)
    if logits.shape[-1] != vocab_size:
        raise ValueError(f"logits must end in vocab_size={vocab_size} classes; got logits {tuple(logits.shape)}")
    return cross_entropy(
        logits,
        shift_labels.to(logits.device),
        ignore_index=ignore_index,
        normalizer=_normalizer(num_items_in_batch, logits.device),
        backend="auto",
        class_dim=-1,  # (batch, tokens, vocab_size) as they come: no transpose, no copy
    )


class FusedCausalLMLoss:
    """A ``compute_loss_func`` for ``transformers.Trainer`` that never materialises the logits.

    ``FusedCausalLMLoss(model)`` registers a forward pre-hook on ``model`` that asks for its
    hidden states and, while training, for the logits of its last position only
    (``logits_to_keep=1``); called by ``Trainer`` with the model's outputs and labels, it returns
    [FusedLinearCrossEntropyLoss][exportable_loss.losses.FusedLinearCrossEntropyLoss] of the final hidden states and the
    model's output layer, labels shifted as transformers shifts them, divided by
    ``num_items_in_batch``: the loss and gradients of transformers' default loss, without the
    ``(batch, tokens, vocabulary)`` logits. A soft-capped output layer
    (``config.final_logit_softcapping``, Gemma 2) is soft-capped here too.

    Args:
        model: a causal LM whose ``forward`` takes ``logits_to_keep`` and whose final hidden state
            goes through ``model.get_output_embeddings()`` and nothing else.
        **options: options of ``FusedLinearCrossEntropyLoss`` (``ignore_index``, ``label_smoothing``,
            ``z_loss``, ``chunk_size``, ``backend``, ...); ``reduction`` stays ``"mean"``.

    Raises:
        ValueError: the model does not take ``logits_to_keep``, or scales its logits
            (``config.logit_scale`` or ``config.logits_scaling`` other than 1).

    Call `remove()` to take the hook off the model.
    """

    def __init__(self, model: nn.Module, **options: Any) -> None:
        import inspect

        if "logits_to_keep" not in inspect.signature(model.forward).parameters:
            raise ValueError(
                f"FusedCausalLMLoss needs a model whose forward takes logits_to_keep; {type(model).__name__}'s does not"
            )
        config = getattr(model, "config", None)
        for name in ("logit_scale", "logits_scaling"):
            scale = getattr(config, name, None)
            if scale is not None and scale != 1:
                raise ValueError(f"FusedCausalLMLoss does not apply the model's {name}; got config.{name}={scale}")
        if options.get("reduction", "mean") != "mean":
            raise ValueError(f"FusedCausalLMLoss reduces with 'mean'; got reduction={options['reduction']!r}")
        softcap = getattr(config, "final_logit_softcapping", None)
        options.setdefault("logit_softcap", softcap)
        self.ignore_index: int = options.get("ignore_index", -100)
        self.loss = FusedLinearCrossEntropyLoss(**options)
        self.head: nn.Module = cast(Any, model).get_output_embeddings()
        self._shift_labels: Optional[Tensor] = None
        self._hook = model.register_forward_pre_hook(self._ask_for_hidden_states, with_kwargs=True)

    def _ask_for_hidden_states(
        self, module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        kwargs["output_hidden_states"] = True
        if module.training:
            kwargs["logits_to_keep"] = 1
        # a padding-free collator's shifted labels reach the model, not compute_loss_func
        self._shift_labels = kwargs.get("shift_labels")
        return args, kwargs

    def __call__(self, outputs: Any, labels: Optional[Tensor], num_items_in_batch: ItemCount = None) -> Tensor:
        hidden = outputs.hidden_states[-1]  # the final (normalised) hidden states
        if self._shift_labels is not None:
            target = self._shift_labels
        elif labels is not None:
            target = _shift(labels, self.ignore_index)
        else:
            raise ValueError("FusedCausalLMLoss needs labels (or shift_labels in the model's inputs); got None")
        return self.loss(
            hidden,
            self.head.weight,
            target.to(hidden.device),
            getattr(self.head, "bias", None),
            normalizer=_normalizer(num_items_in_batch, hidden.device),
        )

    def remove(self) -> None:
        """Take the forward pre-hook off the model."""
        self._hook.remove()
