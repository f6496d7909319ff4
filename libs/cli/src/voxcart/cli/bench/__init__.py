"""``voxcart bench``: measurements of voxcart's own components on this machine.

``voxcart bench speech`` (:mod:`voxcart.cli.bench.speech`) measures the speech stack on a telephone line:

- WER is computed on canonical tokens (:mod:`~voxcart.cli.bench.wer`): numbers count digit by digit, whether
  written as digits or words, so a recognizer that writes "10023" is scored like one that writes "one zero zero
  two three";
- intent accuracy is the brain's own classifier on the transcript against the sentence's label
  (:mod:`~voxcart.cli.bench.intent`); "intent on the reference text" is the same classifier on what was
  really said, the ceiling the recognizer can reach;
- SNR is measured on the active part of the speech (:mod:`~voxcart.cli.bench.noise`);
- RTF is CPU seconds per second of audio.

Modules are imported only by ``voxcart bench`` itself (they load the recognizer and the caller's voice).
"""
