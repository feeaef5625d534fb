// Named hyperparameter presets (`preset: lab|tulu|recipe`) merged UNDER a pipeline file's own keys.
//
// Sources: the paper at ../shared/seeds/paper-full.md ("Unveiling the Secret Recipe: A Guide for
// Supervised Fine-Tuning Small LLMs"). Its Table 1 (the LAB / TULU / TULU++ settings) is referenced
// in §2.3 but the table body did not survive the text extraction, so every value below cites the
// prose that states it; values the paper text does not state are marked UNCONFIRMED with their
// origin. All presets keep the optimizer defaults of the config (Adam β1 0.9, β2 0.95, §A.4: "Across
// all experiments, we use the Adam optimizer with β1 = 0.9 and β2 = 0.95").

/** The names `preset:` accepts. */
export const PRESET_NAMES = ["lab", "tulu", "recipe"] as const;
/** One preset name. */
export type PresetName = typeof PRESET_NAMES[number];

/** The keys a preset may set: a subset of the `train` section (YAML spelling). */
export interface PresetValues {
  train: {
    strategy?: "stacked" | "phased";
    effective_batch_size?: number;
    lr?: number;
    schedule?: "constant" | "cosine" | "linear";
    warmup_steps?: number;
    warmup_ratio?: number;
    epochs?: number;
  };
}

/** Preset values by name; a pipeline file's explicit keys (and --set) always win over these. */
export const PRESETS: Readonly<Record<PresetName, PresetValues>> = {
  // LAB (Sudalairaj et al. 2024), the configuration the paper varies one factor at a time (§2.3).
  lab: {
    train: {
      // §2.3: "effective batch sizes of 128 (small), 3,840 (medium), and 7,680 (large)"; §A.4: "an
      // effective batch size of 3,840 samples"; §A.6.7 / §A.6.8 call it "a batch size of 4,000".
      effective_batch_size: 3840,
      // §A.6.5: "LAB hyperparameters with learning rates ranging from 2e-5 to 1e-4", 2e-5 best.
      lr: 2e-5,
      // §A.6.7: "LAB used a batch size of 4,000 and a constant learning rate".
      schedule: "constant",
      // §2.3 varies warmup over 0 / 25 / 100 steps and §A.6.6 trains "the Granite 7B LAB model with
      // varying warmup steps: 0, 25, and 100". 25 as the LAB default is UNCONFIRMED by the text
      // (it is in the missing Table 1 body); it follows the brief.
      warmup_steps: 25,
      // §2.3: "LAB introduces a multi-phase tuning framework" (phase 00 → 05 → 10, §2.2 / §A.3).
      strategy: "phased",
    },
  },
  // TULU (Wang et al. 2023b; Ivison et al. 2023), the paper's "gold standard" baseline.
  tulu: {
    train: {
      // §1: "they use a (small) batch size of 128 samples".
      effective_batch_size: 128,
      // §A.6.5: "TULU hyperparameters at learning rates of 2e-5 and 3e-5"; 2e-5 is TULU's own.
      lr: 2e-5,
      // §A.6.7 / §A.6.8: "TULU used a batch size of 128 with warmup and linear decay".
      schedule: "linear",
      // UNCONFIRMED by the paper text: warmup over the first 3% of steps and 2 epochs are the TULU
      // papers' own settings (Wang et al. 2023b §4; the missing Table 1 body), as in the brief.
      warmup_ratio: 0.03,
      epochs: 2,
    },
  },
  // The paper's recommendation (§A.1 "Guidelines for practitioners").
  recipe: {
    train: {
      // §A.1: "we advocate for stacked over sequential phased training".
      strategy: "stacked",
      // §A.1: "Larger batch sizes (e.g., 4k and 8k) are recommended"; 3,840 is the paper's "4k".
      effective_batch_size: 3840,
      // §A.1: "We found that 2e-5 works well for Granite models, while 1e-6 performs best for Mistral".
      lr: 2e-5,
      // §A.1: "omitting warmup steps and using a constant learning rate instead of cosine decay does
      // not negatively impact performance".
      schedule: "constant",
      warmup_steps: 0,
      warmup_ratio: 0,
    },
  },
};
