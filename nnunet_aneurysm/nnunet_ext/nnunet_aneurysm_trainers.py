"""Re-exports our trainers so stock ``nnUNetv2_train -tr`` / ``nnUNetv2_predict`` find them.

Point nnU-Net here with ``export nnUNet_extTrainer=$(nnunet-aneurysm ext-path)``.
"""

from nnunet_aneurysm.trainers import *  # noqa: F401,F403
from nnunet_aneurysm.trainers import __all__  # noqa: F401
