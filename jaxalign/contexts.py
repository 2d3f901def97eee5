"""Former home of the teacher contexts, kept so that older imports still work.

Everything moved to :mod:`jaxalign.teachers`: the prompt formats (``teachers/formats.py``),
demonstrations (``teachers/demos.py``) and summarizers (``teachers/summarizers.py``).
"""

from jaxalign.teachers import (FORMATS, DemonstrationCache, Demonstrations, Summarizer, ToyRuleSummarizer,
                               build_context, sample_demonstrations)
from jaxalign.teachers.formats import check_same_generation_prompt, self_1c, self_1c1w, self_sum_1c

__all__ = ["FORMATS", "DemonstrationCache", "Demonstrations", "Summarizer", "ToyRuleSummarizer", "build_context",
           "check_same_generation_prompt", "sample_demonstrations", "self_1c", "self_1c1w", "self_sum_1c"]
