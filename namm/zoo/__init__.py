"""The zoo: models the project trains itself, on top of everything else (they import evaluation, never the
other way round): the language model (:mod:`.lm`), the video model (:mod:`.video`), the RL behaviour data
(:mod:`.rl_data`) and the Decision Transformers (:mod:`.dt`). The trained folders are read through
:mod:`namm.models`."""
