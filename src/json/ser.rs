//! A compact JSON serialiser for what the webhook writes on every admission (patch values, the
//! agent spec): serde_json's output byte for byte (tested against it for any JSON value and
//! for every shape serde derives). It exists for where it writes: into any [`Sink`], including
//! one inside a JSON string ([`escape::InString`]), which serde_json's serialiser cannot do.
//!
//! Errors are `serde_json::Error`s so callers keep one error type for JSON. One deliberate
//! difference: serde_json's `RawValue` (JSON text written as it is) is refused rather than
//! imitated through serde_json's private marker; trusted text goes in through
//! [`crate::patch::JsonText`] instead.

use serde::ser::{self, Error as _, Impossible, Serialize};

use super::escape::{self, Sink};

type Error = serde_json::Error;
type Result<T> = std::result::Result<T, Error>;

/// serde_json's marker for a `RawValue`, recognised only to refuse it.
const RAW_VALUE: &str = "$serde_json::private::RawValue";

pub struct Writer<'a, S: Sink> {
    out: &'a mut S,
}

impl<'a, S: Sink> Writer<'a, S> {
    pub fn new(out: &'a mut S) -> Writer<'a, S> {
        Writer { out }
    }

    fn int(&mut self, n: impl itoa::Integer) {
        self.out.push_str(itoa::Buffer::new().format(n));
    }

    /// Floats as serde_json writes them (shortest round-trip digits, `null` when not finite):
    /// the webhook writes none, so exactness matters more here than speed.
    fn float<F: Serialize>(&mut self, f: F) -> Result<()> {
        self.out.push_str(&serde_json::to_string(&f)?);
        Ok(())
    }

    fn open(&mut self, bracket: u8) -> Compound<'_, 'a, S> {
        self.out.push_ascii(bracket);
        Compound { writer: self, first: true }
    }

    /// `{"variant":` — the wrapper serde_json writes around an externally tagged variant.
    fn open_variant(&mut self, variant: &str) {
        self.out.push_ascii(b'{');
        escape::push_quoted(self.out, variant);
        self.out.push_ascii(b':');
    }
}

macro_rules! ints {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, n: $ty) -> Result<()> {
            self.int(n);
            Ok(())
        })*
    };
}

impl<'b, 'a, S: Sink> ser::Serializer for &'b mut Writer<'a, S> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'b, 'a, S>;
    type SerializeTuple = Compound<'b, 'a, S>;
    type SerializeTupleStruct = Compound<'b, 'a, S>;
    type SerializeTupleVariant = Compound<'b, 'a, S>;
    type SerializeMap = Compound<'b, 'a, S>;
    type SerializeStruct = Compound<'b, 'a, S>;
    type SerializeStructVariant = Compound<'b, 'a, S>;

    ints!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128);
    ints!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);

    fn serialize_bool(self, b: bool) -> Result<()> {
        self.out.push_str(if b { "true" } else { "false" });
        Ok(())
    }

    fn serialize_f32(self, f: f32) -> Result<()> {
        self.float(f)
    }

    fn serialize_f64(self, f: f64) -> Result<()> {
        self.float(f)
    }

    fn serialize_char(self, c: char) -> Result<()> {
        escape::push_quoted(self.out, c.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, s: &str) -> Result<()> {
        escape::push_quoted(self.out, s);
        Ok(())
    }

    fn serialize_bytes(self, bytes: &[u8]) -> Result<()> {
        let mut seq = self.open(b'[');
        for byte in bytes {
            ser::SerializeSeq::serialize_element(&mut seq, byte)?;
        }
        ser::SerializeSeq::end(seq)
    }

    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<()> {
        self.out.push_str("null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<()> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.open_variant(variant);
        value.serialize(&mut *self)?;
        self.out.push_ascii(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'b, 'a, S>> {
        Ok(self.open(b'['))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'b, 'a, S>> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'b, 'a, S>> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'b, 'a, S>> {
        self.open_variant(variant);
        Ok(self.open(b'['))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'b, 'a, S>> {
        Ok(self.open(b'{'))
    }

    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Compound<'b, 'a, S>> {
        if name == RAW_VALUE {
            return Err(Error::custom("raw JSON values are written through patch::JsonText, not serialised"));
        }
        Ok(self.open(b'{'))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'b, 'a, S>> {
        self.open_variant(variant);
        Ok(self.open(b'{'))
    }
}

/// A list or an object being written.
pub struct Compound<'b, 'a, S: Sink> {
    writer: &'b mut Writer<'a, S>,
    first: bool,
}

impl<S: Sink> Compound<'_, '_, S> {
    fn separate(&mut self, separator: u8) {
        if !std::mem::take(&mut self.first) {
            self.writer.out.push_ascii(separator);
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.separate(b',');
        value.serialize(&mut *self.writer)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        self.separate(b',');
        escape::push_quoted(self.writer.out, key);
        self.writer.out.push_ascii(b':');
        value.serialize(&mut *self.writer)
    }

    fn close(self, bracket: u8) -> Result<()> {
        self.writer.out.push_ascii(bracket);
        Ok(())
    }

    /// Closes a variant's contents and then its `{"variant":` wrapper.
    fn close_variant(self, bracket: u8) -> Result<()> {
        self.writer.out.push_ascii(bracket);
        self.writer.out.push_ascii(b'}');
        Ok(())
    }
}

/// The four list-like compounds differ only in their method's name and how they close.
macro_rules! list_like {
    ($($trait:ident: $method:ident, $close:ident),*) => {
        $(impl<S: Sink> ser::$trait for Compound<'_, '_, S> {
            type Ok = ();
            type Error = Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                self.element(value)
            }

            fn end(self) -> Result<()> {
                self.$close(b']')
            }
        })*
    };
}

list_like!(
    SerializeSeq: serialize_element, close,
    SerializeTuple: serialize_element, close,
    SerializeTupleStruct: serialize_field, close,
    SerializeTupleVariant: serialize_field, close_variant
);

impl<S: Sink> ser::SerializeMap for Compound<'_, '_, S> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.separate(b',');
        key.serialize(KeyWriter { out: self.writer.out })?;
        self.writer.out.push_ascii(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<()> {
        self.close(b'}')
    }
}

/// A struct and a struct variant differ only in how they close.
macro_rules! struct_like {
    ($($trait:ident: $close:ident),*) => {
        $(impl<S: Sink> ser::$trait for Compound<'_, '_, S> {
            type Ok = ();
            type Error = Error;

            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
                self.field(key, value)
            }

            fn end(self) -> Result<()> {
                self.$close(b'}')
            }
        })*
    };
}

struct_like!(SerializeStruct: close, SerializeStructVariant: close_variant);

/// A map key: JSON keys are strings, so serde_json quotes numbers and booleans used as keys
/// and refuses anything else; so does this.
struct KeyWriter<'o, S: Sink> {
    out: &'o mut S,
}

impl<S: Sink> KeyWriter<'_, S> {
    fn quoted(self, text: &str) -> Result<()> {
        self.out.push_ascii(b'"');
        self.out.push_str(text);
        self.out.push_ascii(b'"');
        Ok(())
    }

    fn float<F: Serialize>(self, f: F, finite: bool) -> Result<()> {
        if !finite {
            return Err(Error::custom("float key must be finite (got NaN or +/-inf)"));
        }
        let digits = serde_json::to_string(&f)?;
        self.quoted(&digits)
    }
}

fn key_must_be_a_string() -> Error {
    Error::custom("key must be a string")
}

macro_rules! int_keys {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, n: $ty) -> Result<()> {
            self.quoted(itoa::Buffer::new().format(n))
        })*
    };
}

macro_rules! refused_keys {
    ($($method:ident($($arg:ty),*) -> $ok:ty),*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ok> {
            Err(key_must_be_a_string())
        })*
    };
}

impl<S: Sink> ser::Serializer for KeyWriter<'_, S> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    int_keys!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128);
    int_keys!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);
    refused_keys!(
        serialize_bytes(&[u8]) -> (),
        serialize_none() -> (),
        serialize_unit() -> (),
        serialize_unit_struct(&'static str) -> (),
        serialize_seq(Option<usize>) -> Impossible<(), Error>,
        serialize_tuple(usize) -> Impossible<(), Error>,
        serialize_tuple_struct(&'static str, usize) -> Impossible<(), Error>,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Impossible<(), Error>,
        serialize_map(Option<usize>) -> Impossible<(), Error>,
        serialize_struct(&'static str, usize) -> Impossible<(), Error>,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Impossible<(), Error>
    );

    fn serialize_bool(self, b: bool) -> Result<()> {
        self.quoted(if b { "true" } else { "false" })
    }

    fn serialize_f32(self, f: f32) -> Result<()> {
        self.float(f, f.is_finite())
    }

    fn serialize_f64(self, f: f64) -> Result<()> {
        self.float(f, f.is_finite())
    }

    fn serialize_char(self, c: char) -> Result<()> {
        self.serialize_str(c.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, s: &str) -> Result<()> {
        escape::push_quoted(self.out, s);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<()> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<()> {
        Err(key_must_be_a_string())
    }
}
