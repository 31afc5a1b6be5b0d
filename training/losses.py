"""Loss for the packed targets: partial-label cross-entropy, WBC Dice and centre heatmap BCE."""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="bloodseg")
class CellLoss(keras.losses.Loss):
    """y_true channels: one-hot (bg, rbc, wbc), ambiguous, centre target, centre weight.

    * Cross-entropy weighted per class, so the rare WBC (~1 per image vs ~22 RBC) counts.
      An ambiguous pixel (unboxed RBC possible) is scored on p(bg) + p(rbc): "not WBC".
    * Soft Dice on the WBC channel over the batch, indifferent to how rare WBC pixels are.
    * Binary cross-entropy on the centre heatmap where its target is known (if predicted).
    """

    def __init__(
        self,
        class_weights: tuple[float, float, float] = (1.0, 1.0, 3.0),
        dice_weight: float = 1.0,
        centre_weight: float = 1.0,
        name: str = "cell_loss",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.class_weights = tuple(float(w) for w in class_weights)
        self.dice_weight = float(dice_weight)
        self.centre_weight = float(centre_weight)

    def call(self, y_true, y_pred):
        one_hot = y_true[..., :3]
        ambiguous = y_true[..., 3]
        probs = ops.clip(y_pred[..., :3], EPSILON, 1.0 - EPSILON)
        weights = ops.convert_to_tensor(self.class_weights, dtype=probs.dtype)
        known_ce = -ops.sum(one_hot * weights * ops.log(probs), axis=-1)
        ambiguous_ce = -weights[0] * ops.log(probs[..., 0] + probs[..., 1])
        ce = ops.mean(ops.where(ambiguous > 0.5, ambiguous_ce, known_ce))

        wbc_true, wbc_pred = one_hot[..., 2], probs[..., 2]
        dice = 1.0 - (2.0 * ops.sum(wbc_true * wbc_pred) + 1.0) / (
            ops.sum(wbc_true) + ops.sum(wbc_pred) + 1.0
        )
        loss = ce + self.dice_weight * dice

        if y_pred.shape[-1] > 3:
            centre_true, centre_mask = y_true[..., 4], y_true[..., 5]
            centre_pred = ops.clip(y_pred[..., 3], EPSILON, 1.0 - EPSILON)
            bce = -(
                centre_true * ops.log(centre_pred) + (1 - centre_true) * ops.log(1 - centre_pred)
            )
            loss = loss + self.centre_weight * ops.sum(bce * centre_mask) / (
                ops.sum(centre_mask) + 1.0
            )
        return loss

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "dice_weight": self.dice_weight,
            "centre_weight": self.centre_weight,
        }
