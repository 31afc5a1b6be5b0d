"""Loss for the packed targets: partial-label cross-entropy, WBC Dice and centre heatmap BCE,
and, with a teacher, how far the outputs are from the teacher's."""

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
    * With `distill_weight`, y_true ends with a teacher's outputs (as many channels as y_pred,
      training.distill): the KL divergence of the student's classes from the teacher's, and
      the binary cross-entropy of its heatmap against the teacher's, over every pixel (a
      teacher knows what the boxes leave open).
    """

    def __init__(
        self,
        class_weights: tuple[float, ...] = (1.0, 1.0, 3.0),
        dice_weight: float = 1.0,
        centre_weight: float = 1.0,
        distill_weight: float = 0.0,
        name: str = "cell_loss",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.class_weights = tuple(float(w) for w in class_weights)
        self.dice_weight = float(dice_weight)
        self.centre_weight = float(centre_weight)
        self.distill_weight = float(distill_weight)

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
        if self.distill_weight:
            loss = loss + self.distill_weight * self.distillation(y_true, y_pred)
        return loss

    def distillation(self, y_true, y_pred):
        """The student's distance from the teacher outputs that end y_true."""
        k, channels = len(self.class_weights), y_pred.shape[-1]
        teacher = y_true[..., -channels:]
        taught = ops.clip(teacher[..., :k], EPSILON, 1.0)
        probs = ops.clip(y_pred[..., :k], EPSILON, 1.0)
        loss = ops.mean(ops.sum(taught * (ops.log(taught) - ops.log(probs)), axis=-1))
        if channels > k:
            target = teacher[..., k]
            centre = ops.clip(y_pred[..., k], EPSILON, 1.0 - EPSILON)
            loss = loss + ops.mean(-(target * ops.log(centre) + (1 - target) * ops.log(1 - centre)))
        return loss

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "dice_weight": self.dice_weight,
            "centre_weight": self.centre_weight,
            "distill_weight": self.distill_weight,
        }
