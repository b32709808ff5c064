"""Stage 4, cultivation (the paper's step 1): fine-tune the donor on the train split before grafting."""

from graftsearch.cultivate._cultivate import CultivateSettings, Cultivation, cultivate_donor

__all__ = ['CultivateSettings', 'Cultivation', 'cultivate_donor']
