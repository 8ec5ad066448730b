//! Coarse geography from the client address: country and first-level region, from a
//! MaxMind database. After this lookup the address is no longer needed and is not
//! passed on.

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

impl GeoLookup {
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| Error::GeoIp {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            reader: Some(reader),
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
