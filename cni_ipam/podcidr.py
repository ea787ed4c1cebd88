"""usePodCidr sources (placeholder until the usePodCidr issue lands)."""

from cni_ipam.errors import PODCIDR_UNAVAILABLE, CniError


def subnet_for(placeholder: str, ipam: dict, data_dir: str):
    """The node pod CIDR of the family ``placeholder`` asks for (usePodCidr / usePodCidrIPv6)."""
    raise CniError(
        PODCIDR_UNAVAILABLE,
        f'"subnet": "{placeholder}" is not supported yet by this build of cni-ipam',
        "key ipam.subnet",
    )
