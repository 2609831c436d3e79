"""Identity records as configured in the ``identities`` list of the config file.

Plain data only; authentication against them lives in the rest of edgehub.auth.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgehub.message import Identity


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """A device (``module_id`` None) or module the hub accepts.

    Keys are the base64 symmetric keys of IoT Hub SAS auth; ``x509_thumbprint``
    (SHA-256 hex, or SHA-1 hex as IoT Hub allows) or ``x509_ca_file`` (PEM)
    enable certificate auth.
    """

    device_id: str
    module_id: str | None = None
    primary_key: str | None = None
    secondary_key: str | None = None
    x509_thumbprint: str | None = None
    x509_ca_file: str | None = None

    @property
    def identity(self) -> Identity:
        return Identity(self.device_id, self.module_id)
