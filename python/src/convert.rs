//! JSON values (metrics records, configurations, reports) to Python dicts
//! and lists, and Python keyword arguments to JSON (training options).

use crate::errors::bad_input;
use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use serde_json::Value;

/// A JSON value as the Python value `json.loads` would give.
pub fn to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_py_any(py)?,
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_py_any(py)?,
            (None, Some(u)) => u.into_py_any(py)?,
            _ => n.as_f64().unwrap_or(f64::NAN).into_py_any(py)?,
        },
        Value::String(s) => s.into_py_any(py)?,
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_py_any(py)?
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, to_py(py, item)?)?;
            }
            dict.into_py_any(py)?
        }
    })
}

/// A Python value (None, bool, int, float, str, or a list of them) as JSON;
/// `name` is the option it is given for, named in the error.
pub fn from_py(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Value> {
    if value.is_none() {
        Ok(Value::Null)
    } else if value.is_instance_of::<PyBool>() {
        Ok(Value::Bool(value.extract()?))
    } else if value.is_instance_of::<PyInt>() {
        Ok(Value::from(value.extract::<i64>()?))
    } else if value.is_instance_of::<PyFloat>() {
        let x: f64 = value.extract()?;
        Ok(serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number))
    } else if value.is_instance_of::<PyString>() {
        Ok(Value::String(value.extract()?))
    } else if let Ok(path) = value.extract::<std::path::PathBuf>() {
        Ok(Value::String(path.display().to_string()))
    } else if let Ok(items) = value.extract::<Vec<Bound<'_, PyAny>>>() {
        let items: PyResult<Vec<Value>> = items.iter().map(|v| from_py(name, v)).collect();
        Ok(Value::Array(items?))
    } else {
        Err(bad_input(format!(
            "{name}: expected a number, a string or a bool, got {}",
            value.get_type().name()?
        )))
    }
}

/// Token ids given as a sequence (a list, a 1-D array): `(ids, None)`; or a
/// batch of equal-length sequences (a 2-D array, a list of lists):
/// `(ids, Some(batch))`, row-major.
pub fn ids_arg(ids: &Bound<'_, PyAny>) -> PyResult<(Vec<u32>, Option<usize>)> {
    let to_u32 = |x: i64| {
        u32::try_from(x).map_err(|_| bad_input(format!("token id {x} is not a token id (0..2^32)")))
    };
    let rows = ids
        .extract::<Vec<Vec<i64>>>()
        .ok()
        .filter(|rows| !rows.is_empty());
    if let Some(rows) = rows {
        let t = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != t) {
            return Err(bad_input(
                "the sequences of a batch must have the same length",
            ));
        }
        let flat: PyResult<Vec<u32>> = rows.into_iter().flatten().map(to_u32).collect();
        let batch = flat.as_ref().map_or(0, |f| f.len() / t.max(1));
        return Ok((flat?, Some(batch.max(1))));
    }
    let flat: Vec<i64> = ids.extract().map_err(|_| {
        bad_input("token ids: expected a sequence of ints, or a batch (a 2-D array)")
    })?;
    let flat: PyResult<Vec<u32>> = flat.into_iter().map(to_u32).collect();
    Ok((flat?, None))
}
