//! The domain's closed enums as PostgreSQL text: written by their stored names, read back
//! through their `parse`, so a value outside a set fails the read (naming the value) instead of
//! being defaulted.

use std::error::Error;

use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

use crate::domain;

macro_rules! text_enum {
    ($($t:ty),+) => {
        $(
            impl ToSql for $t {
                fn to_sql(
                    &self,
                    ty: &Type,
                    out: &mut BytesMut,
                ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                    self.as_str().to_sql(ty, out)
                }

                fn accepts(ty: &Type) -> bool {
                    <&str as ToSql>::accepts(ty)
                }

                to_sql_checked!();
            }

            impl<'a> FromSql<'a> for $t {
                fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
                    let s = <&str as FromSql>::from_sql(ty, raw)?;
                    <$t>::parse(s).ok_or_else(|| {
                        format!(
                            "corrupt row: {:?} is not a value auditwarden writes",
                            s.chars().take(80).collect::<String>()
                        )
                        .into()
                    })
                }

                fn accepts(ty: &Type) -> bool {
                    <&str as FromSql>::accepts(ty)
                }
            }
        )+
    };
}

text_enum!(
    domain::UserStatus,
    domain::RoleChangeKind,
    domain::RoleChangeSource,
    domain::HistoryField,
    domain::UserRunKind,
    domain::DeliveryStatus
);
