//! Coarse geography from the client address: country and first-level region, from a
//! MaxMind database; and, from an ASN database, whether the address belongs to a
//! hosting or cloud network (a bot signal). After these lookups the address is no
//! longer needed and is not passed on.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use maxminddb::geoip2;
use spur_schemas::record::Geo;

use crate::error::{Error, Result};

/// An open GeoIP database, or none (every lookup then yields an empty [`Geo`]).
#[derive(Debug, Default)]
pub struct GeoLookup {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

fn open_reader(path: &Path) -> Result<maxminddb::Reader<Vec<u8>>> {
    maxminddb::Reader::open_readfile(path).map_err(|source| Error::GeoIp {
        path: path.to_owned(),
        source,
    })
}

impl GeoLookup {
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        Ok(Self {
            reader: Some(open_reader(path)?),
        })
    }

    pub fn lookup(&self, ip: IpAddr) -> Geo {
        let Some(reader) = &self.reader else {
            return Geo::default();
        };
        let city: Option<geoip2::City> = reader
            .lookup(ip)
            .ok()
            .and_then(|r| r.decode().ok().flatten());
        let Some(city) = city else {
            return Geo::default();
        };
        Geo {
            country: city.country.iso_code.map(str::to_owned),
            region: city
                .subdivisions
                .first()
                .and_then(|s| s.iso_code)
                .map(str::to_owned),
        }
    }
}

/// An ASN database and the autonomous systems counted as data centres; without a
/// database nothing is a data centre.
#[derive(Debug, Default)]
pub struct DatacenterLookup {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
    asns: HashSet<u32>,
}

impl DatacenterLookup {
    pub fn open(path: Option<&Path>, asns: &[u32]) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        Ok(Self {
            reader: Some(open_reader(path)?),
            asns: asns.iter().copied().collect(),
        })
    }

    /// The address's autonomous system number, if it is one of the data centres.
    pub fn datacenter_asn(&self, ip: IpAddr) -> Option<u32> {
        let asn: geoip2::Asn = self.reader.as_ref()?.lookup(ip).ok()?.decode().ok()??;
        asn.autonomous_system_number
            .filter(|n| self.asns.contains(n))
    }
}
