// Learning-rate schedules: linear warmup, then constant / cosine / linear decay (transformers' convention).
//
// Convention (checked against transformers/optimization.py, the schedules instructlab/training
// builds with `get_scheduler`): the lr multiplier of optimizer step s (0-based: the number of
// optimizer steps already taken) is
//   warmup (s < W):  s / max(1, W)                     — so step 0 runs with lr 0, step W with the full lr
//   constant:        1
//   cosine:          m + (1 - m) · ½(1 + cos(π · p)),   p = (s - W) / max(1, T - W)
//   linear:          m + (1 - m) · max(0, (T - s) / max(1, T - W))
// with T the total number of optimizer steps and m = min_lr_ratio. For m = 0 these are exactly
// get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup and
// get_linear_schedule_with_warmup (LambdaLR applies lr_lambda(s) to the update of step s, since the
// scheduler is stepped after the optimizer); for the cosine, m > 0 is
// get_cosine_with_min_lr_schedule_with_warmup's `min_lr_rate`. transformers' linear schedule has no
// floor; here m applies the same way as for the cosine.
// A warmup ratio r becomes W = ceil(T · r), as TrainingArguments.get_warmup_steps does.

/** The lr schedules a pipeline can name. */
export type ScheduleName = "constant" | "cosine" | "linear";

/** What lrAt needs from the train config. */
export interface ScheduleOptions {
  /** The peak ("goal") learning rate. */
  lr: number;
  schedule: ScheduleName;
  /** Warmup length in optimizer steps; wins over warmupRatio when > 0. */
  warmupSteps?: number;
  /** Warmup as a fraction of the total steps (ceil(total · ratio)) when warmupSteps is 0. */
  warmupRatio?: number;
  /** The decay floor as a fraction of lr (cosine and linear only). */
  minLrRatio?: number;
}

/** Warmup length in steps: warmupSteps if > 0, else ceil(totalSteps · warmupRatio). */
export function warmupStepsFor(totalSteps: number, o: ScheduleOptions): number {
  const w = o.warmupSteps ?? 0;
  if (w > 0) return w;
  return Math.ceil(totalSteps * (o.warmupRatio ?? 0));
}

/** The multiplier (0..1) of the peak lr for optimizer step `step` (0-based) of `totalSteps`. */
export function lrFactorAt(step: number, totalSteps: number, o: ScheduleOptions): number {
  if (!Number.isInteger(step) || step < 0) throw new RangeError(`lr step must be an integer >= 0`);
  const warm = warmupStepsFor(totalSteps, o);
  if (step < warm) return step / Math.max(1, warm);
  const m = o.minLrRatio ?? 0;
  switch (o.schedule) {
    case "constant":
      return 1;
    case "cosine": {
      // Clamped at 1 (transformers does not clamp) so steps past the end stay at the floor.
      const p = Math.min(1, (step - warm) / Math.max(1, totalSteps - warm));
      const f = 0.5 * (1 + Math.cos(Math.PI * p));
      return Math.max(0, m + (1 - m) * f);
    }
    case "linear": {
      const f = Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warm));
      return m + (1 - m) * f;
    }
    default:
      throw new RangeError(`unknown lr schedule ${JSON.stringify(o.schedule)}`);
  }
}

/** The learning rate of optimizer step `step` (0-based) in a run of `totalSteps` steps. */
export function lrAt(step: number, totalSteps: number, o: ScheduleOptions): number {
  return o.lr * lrFactorAt(step, totalSteps, o);
}
