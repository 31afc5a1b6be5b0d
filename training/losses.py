"""Loss for the packed targets: partial-label cross-entropy, WBC Dice and centre heatmap BCE."""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="bloodseg")
class CellLoss(keras.losses.Loss):
    """y_true channels: allowed classes (one per class), centre target, centre weight.

    * Cross-entropy weighted per class, so rare WBCs and platelets count. A pixel allowed
      several classes (an unboxed RBC or platelet is possible) is scored on their summed
      probability, with the mean of their weights.
    * Soft Dice over the batch on each class after RBC (WBC, platelet), indifferent to how
      rare their pixels are, over the pixels where that class is known.
    * Binary cross-entropy on the centre heatmap where its target is known (if predicted).
    """

    def __init__(
        self,
        class_weights: tuple[float, ...] = (1.0, 1.0, 3.0),
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
        k = len(self.class_weights)
        allowed = y_true[..., :k]
        probs = ops.clip(y_pred[..., :k], EPSILON, 1.0 - EPSILON)
        weights = ops.convert_to_tensor(self.class_weights, dtype=probs.dtype)
        choices = ops.sum(allowed, axis=-1)
        pixel_weight = ops.sum(allowed * weights, axis=-1) / ops.maximum(choices, 1.0)
        ce = ops.mean(-pixel_weight * ops.log(ops.sum(allowed * probs, axis=-1)))
        loss = ce

        single = ops.cast(choices < 1.5, probs.dtype)
        for index in range(2, k):
            known = 1.0 - allowed[..., index] * (1.0 - single)
            truth, pred = allowed[..., index] * single, probs[..., index] * known
            dice = 1.0 - (2.0 * ops.sum(truth * pred) + 1.0) / (
                ops.sum(truth) + ops.sum(pred) + 1.0
            )
            loss = loss + self.dice_weight * dice

        if y_pred.shape[-1] > k:
            centre_true, centre_mask = y_true[..., k], y_true[..., k + 1]
            centre_pred = ops.clip(y_pred[..., k], EPSILON, 1.0 - EPSILON)
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
